"""The slimmable network: sub-network names, slimmable layers and the channel rule, the ResNets, params and MACs."""
