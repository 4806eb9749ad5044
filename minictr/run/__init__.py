"""`minictr run`: the recipe and its steps, in the order of the tutorial's chapters.

    container.py    the recipe: run() on the host, shim() between, init_container() as PID 1
    namespaces.py   the shim and init processes, and how they talk while they start (ch.4)
    overlay.py      the overlay mount: the image below, the container's upper above (ch.1, 2)
    rootfs.py       private mounts, /proc, /dev, /sys, pivot_root (ch.5)
    mounts.py       one mount(2) call and its mount(8) line: what --explain shows is mounted
    cgroups/        limits, what was used, why it ended; v1 and v2 backends; the freezer (ch.8)
    network.py      --network none|bridge|host, -p (ch.9)
    security.py     capabilities, no_new_privs, masked and read-only paths (ch.10)
    userns.py       --userns: root inside is an unprivileged range outside (ch.10)
    terminal.py     -t: a pseudo-terminal, as `docker run -it` gives one
"""
