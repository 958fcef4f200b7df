"""torchrun: where this process stands in a launch (:mod:`.launch`) and the
collectives that join it to the others (:mod:`.comm`). Nothing else: what a
run does with them lives in :mod:`fmclf.run`."""
