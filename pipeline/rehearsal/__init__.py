"""The AVE-size rehearsal (``avel rehearsal``, ``make rehearsal``): the real AVE structure served on
loopback with a realistic fault mix, through every stage with a kill-and-resume of each, measured.

:mod:`.inputs` builds the inputs (annotation rows, split lists, clip offsets, the fault plan, the
source files and the fault-injecting server); :mod:`.run` runs the stages and writes the report.
The scale rehearsal (``--scale audioset``): :mod:`.audioset` generates AudioSet-size lists,
:mod:`.scale` runs every metadata path on them and :mod:`.probes` holds the paths it times in
processes of their own.
"""
