"""The dashboard's views, one module each, in tab order: (title, Viewer class). Every view takes
the session's `ExplorerState` as `state` (and the server's `JobManager` as `jobs` if it declares
that parameter); the tab's URL name is the title in lower case."""

from .assemblies import AssembliesView
from .connectivity import ConnectivityView
from .data import DataView
from .dynamics import DynamicsView
from .perturbation import PerturbationView
from .quality import QualityView
from .train import TrainView

VIEWS = [
    ("Data", DataView),
    ("Train", TrainView),
    ("Assemblies", AssembliesView),
    ("Dynamics", DynamicsView),
    ("Quality", QualityView),
    ("Connectivity", ConnectivityView),
    ("Perturbation", PerturbationView),
]
