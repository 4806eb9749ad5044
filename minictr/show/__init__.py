"""What minictr shows: what a container changed, and why.

    diff.py     the upper read against the image's layers: A, C, D, opaque (the model)
    report.py   the change report after a run, and `diff`'s Docker lines
    layers.py   `minictr layers`: the merged view, each entry with the layer it comes from
    demo.py     `minictr demo overlay`: chapter 01's experiment, live
"""
