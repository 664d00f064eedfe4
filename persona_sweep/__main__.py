"""`python -m persona_sweep`: the command line, where the console script is not on PATH (a Ray job).

A submitted job ships this package, not what it imports: a Python on the cluster without the
project's dependencies gets one line naming itself and what to install, before any work starts
(the heavy ones are imported only inside commands, so they are looked up here, not imported)."""
import importlib.util
import sys

NEEDED = ("click", "yaml", "pydantic", "ray", "torch", "transformers", "peft", "deepspeed", "mlflow", "datasets")

missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"error: {sys.executable} lacks {', '.join(missing)}: install persona-sweep with its dependencies "
             "into this Python on every node (`pip install .` in the project, or build cluster/Dockerfile); "
             "see the README's section on clusters")

from persona_sweep.cli import main  # noqa: E402

main()
