"""`python -m persona_sweep`: the command line, where the console script is not on PATH (a Ray job)."""
from persona_sweep.cli import main

main()
