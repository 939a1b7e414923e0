"""``python -m pyro_saccade.cli``, e.g. under torchrun."""

from . import main

main(prog_name="saccade")
