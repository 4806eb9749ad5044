"""A container's life after its start: removing what it left (prune).

    prune.py    stopped containers, and whatever a killed runtime left: cgroups, links, mounts
"""
