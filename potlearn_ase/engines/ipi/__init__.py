"""i-PI: the driver side of the socket protocol (:mod:`.protocol`), a client that serves any
ASE calculator with committee extras (:mod:`.client`), and on-the-fly learning under i-PI
(:mod:`.learning`)."""
