"""Trees a container can change, walked and removed by directory fd, never by a joined path.

    walk.py     the one walker: diff, the report, layers, commit, export, df and rm all use it
    remove.py   removing such a tree, without ever reaching past it (rm, prune, --rm)
"""
