"""The synthetic data sets behind ``tools/make_synthetic_data.py``.

``layout`` (image specs, plans and the facts the data sets share), ``paint`` / ``person`` / ``render``
(drawing one image and its PifPaf fields), one planner per data set (``occ_duke``, ``market1501``,
``occ_reid``: which files exist, with which identity, camera and occlusion) and ``writer`` (``generate``:
the files on disk).
"""
