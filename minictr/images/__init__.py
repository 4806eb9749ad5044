"""Images: stacks of read-only layers, and how they are made, stored and moved.

    catalog.py      the store's images and layers: images/NAME.json, layers/<hex>/, rmi
    recipes.py      building an image from the repository's images/ (busybox, debian)
    tarlayer.py     a layer as an OCI tar, and back into overlay's form
    oci.py          image archives: OCI layouts and `docker save` files
    archive.py      images in and out: import, export, commit
"""
