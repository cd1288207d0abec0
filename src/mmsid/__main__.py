"""`python -m mmsid ...` (what torchrun launches: `torchrun --nproc-per-node N -m mmsid ...`)."""

from mmsid.cli import main

main()
