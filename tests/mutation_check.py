"""Mutation check: break one line in each of six places; the tests meant to catch it must fail.

    python tests/mutation_check.py          # all six (about 5 minutes on 2 cores)
    python tests/mutation_check.py 2 5      # only mutants 2 and 5

Each mutant is applied to a throwaway copy of the work tree (never to the tree
itself), the named tests run there, and the line says CAUGHT (the tests failed)
or NOT CAUGHT. Not part of the suite (its name does not start with test_).
"""
import os
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTANTS = [
  ("free bits ignored", "keras_vae/model.py", "free_bits=self.free_bits", "free_bits=0.0",
   ["tests/test_model.py", "-k", "free_bits"]),
  ("analytic_kl ignored", "keras_vae/model.py", "analytic_kl=self.analytic_kl", "analytic_kl=True",
   ["tests/test_model.py", "-k", "monte_carlo or analytic"]),
  ("resume ignores backup/", "keras_vae/runs.py",
   'callbacks = [keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"),',
   'callbacks = [keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup-ignored"),',
   ["tests/test_reliability.py", "-k", "sigkill or sigterm"]),
  ("TFLite tolerance loosened", "keras_vae/export/parity.py",
   'TOLERANCES = {"saved_model": 1e-5, "float32": 1e-5,',
   'TOLERANCES = {"saved_model": 1e-5, "float32": 1e-1,',
   ["tests/test_export.py", "-k", "parity_report_meets"]),
  ("exported encode returns zeros", "keras_vae/export/signatures.py",
   "def posterior_outputs(q):",
   "def posterior_outputs(q):\n"
   "    return {k: tf.zeros_like(v) for k, v in _posterior_outputs(q).items()}\n\n\n"
   "def _posterior_outputs(q):",
   ["tests/test_export.py", "tests/test_main_job.py", "-k", "encode"]),
  ("atomic write made non-atomic", "keras_vae/files.py",
   '''    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:''',
   '''    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    os.close(fd)
    os.unlink(tmp)
    tmp = path
    try:
        with open(path, "wb") as f:''',
   ["tests/test_runs_safety.py", "-k", "failed_rename or midway or umask"]),
]
only = sys.argv[1:]
for i, (name, path, old, new, tests) in enumerate(MUTANTS):
    if only and str(i) not in only:
        continue
    wt = os.path.join(tempfile.mkdtemp(prefix="keras_vae_mutant_"), "tree")
    shutil.copytree(SRC, wt, ignore=shutil.ignore_patterns(".git", "runs", "__pycache__"))
    p = os.path.join(wt, path)
    s = open(p).read()
    assert s.count(old) == 1, (name, s.count(old))
    open(p, "w").write(s.replace(old, new))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        *tests], cwd=wt, env={**os.environ, "PYTHONPATH": wt},
                       capture_output=True, text=True, timeout=1800)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    verdict = "CAUGHT" if r.returncode == 1 else "NOT CAUGHT"
    print(f"{i} {name}: exit {r.returncode} -> {verdict} ({last})", flush=True)
    shutil.rmtree(os.path.dirname(wt))
