#!/bin/bash
#SBATCH --job-name=hpcorch-driver-demo-1
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=01:00:00
#SBATCH --output=/dev/null
#SBATCH --chdir=/
#SBATCH --requeue
#SBATCH --comment="hpcorch driver demo-1"

exec >>/work/runs/demo-1/driver.log 2>&1
# Slurm 22.05's slurmd rejects JWT-authenticated srun; the driver gets its own token.
unset SLURM_JWT
requeue() {
  echo "hpcorch driver: walltime near, requeueing job $SLURM_JOB_ID" >&2
  kill -USR1 "$driver" 2>/dev/null; wait "$driver"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
}
trap requeue USR1
(sleep 3480 && kill -USR1 $$) &
timer=$!
stop_timer() { pkill -P "$timer" 2>/dev/null; kill "$timer" 2>/dev/null; }
trap stop_timer EXIT
trap 'stop_timer; exit 143' TERM
if [ -f /work/runs/demo-1/journal.sqlite ]; then
  /venv/bin/hpcorch resume /work/runs/demo-1 &
else
  /venv/bin/hpcorch run /work/wf.yaml --site dev --run-dir /work/runs/demo-1 --run-id demo-1 &
fi
driver=$!
while kill -0 "$driver" 2>/dev/null; do wait "$driver"; rc=$?; done
exit "${rc:-0}"
