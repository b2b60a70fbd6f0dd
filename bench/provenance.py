"""What every benchmark's JSON line says about where its figures come from (the same fields a run folder's
provenance.json keeps): see `ttc.provenance`."""
from ttc.provenance import provenance

__all__ = ["provenance"]
