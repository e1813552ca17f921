#!/bin/bash
#SBATCH --job-name=bench
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --mem=0
#SBATCH --time=00:01:00
#SBATCH --nodelist=cpu1
#SBATCH --requeue
#SBATCH --hold
#SBATCH --begin=now+1hour

exec sleep 3600
