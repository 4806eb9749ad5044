"""Images: stacks of read-only layers, and how they are made, stored and moved.

    catalog.py      the store's images and layers: images/NAME.json, layers/<hex>/, rmi
    recipes.py      building an image from the repository's images/ (busybox, debian)
    tarlayer.py     a layer as an OCI tar, and back into overlay's form
    oci.py          image archives: OCI layouts and `docker save` files
    archive.py      images in and out: import, export, commit
    reference.py    Docker's image references (alpine:3.20), and the names they are stored under
    registry.py     the HTTP client of the OCI distribution API, every request shown as curl
    auth.py         ~/.docker/config.json, WWW-Authenticate challenges
    pull.py         `minictr pull`: reference → manifest → config → layers → name
    push.py         `minictr push`: layers → blobs (HEAD first) → config → manifest
"""
