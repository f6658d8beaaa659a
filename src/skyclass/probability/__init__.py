"""What a model version's raw outputs become: calibration maps and photo-z PDF summaries.

Pure numpy, no database: training fits the maps (:mod:`skyclass.train`), while
training, the client-side scorer, the report and the domain estimates apply
them from here, so no step reaches into another's package for them.
"""

DEFAULT_FPR = 0.01
"""False-positive rate at which completeness is reported when a run names none."""
