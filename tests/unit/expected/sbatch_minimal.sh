#!/bin/bash
#SBATCH --job-name=hpcorch

exec python -c 'print('"'"'hi'"'"')'
