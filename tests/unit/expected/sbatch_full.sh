#!/bin/bash
#SBATCH --job-name=hpcorch-worker-3
#SBATCH --partition=gpu
#SBATCH --account=m1234
#SBATCH --qos=regular
#SBATCH --nodes=2
#SBATCH --ntasks=8
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=2
#SBATCH --mem=4096M
#SBATCH --gres=gpu:sim:2
#SBATCH --time=01:30:00
#SBATCH --output=/runs/r1/%j.out
#SBATCH --error=/runs/r1/%j.err
#SBATCH --chdir=/runs/r1
#SBATCH --exclude=gpu2
#SBATCH --constraint=gpu
#SBATCH --no-requeue
#SBATCH --signal=B:USR1@60
#SBATCH --comment="hpcorch run r1 task sim"
#SBATCH --mail-type=NONE
#SBATCH --reservation=demo

type module >/dev/null 2>&1 || for f in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh; do [ -r "$f" ] && . "$f" && break; done
module load python/3.11
export OMP_NUM_THREADS=1
source /opt/env.sh
export HPCORCH_RUN=r1
export MSG='two words'
srun --mpi=pmix python -m mpi4py.bench ringtest
