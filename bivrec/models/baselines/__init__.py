"""The paper's comparison baselines (importing this package registers them in ``bivrec.models``)."""

from bivrec.models.baselines.comirec_dr import ComiRecDR
from bivrec.models.baselines.comirec_sa import ComiRecSA
from bivrec.models.baselines.difsr import DIFSR
from bivrec.models.baselines.fdsa import FDSA
from bivrec.models.baselines.gru4rec import GRU4Rec
from bivrec.models.baselines.mind import MIND
from bivrec.models.baselines.mmmlp import MMMLP
from bivrec.models.baselines.nova import NOVA
from bivrec.models.baselines.popularity import Popularity
from bivrec.models.baselines.sasrec import SASRec
from bivrec.models.baselines.unisrec import UniSRec

__all__ = ["ComiRecDR", "ComiRecSA", "DIFSR", "FDSA", "GRU4Rec", "MIND", "MMMLP", "NOVA", "Popularity", "SASRec", "UniSRec"]
