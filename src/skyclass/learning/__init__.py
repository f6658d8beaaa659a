"""Active learning: which objects to label next, and whether that beats labelling at random.

:mod:`.strategies` scores class probabilities by uncertainty (the same
formulas ``skyclass.create_label_queue`` applies to stored predictions in
SQL); :mod:`.queue` creates queue iterations and imports labels;
:mod:`.simulate` replays the loop on labelled objects and stores learning
curves; :mod:`.cli` is ``skyclass queue``.
"""
