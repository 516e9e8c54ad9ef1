"""The served dashboard: `panel serve app/main.py` (what `crbm serve` runs). Panel executes this
script once per browser session; the store and the job manager are the process's (app.server).
"""

import holoviews as hv
import panel as pn

from app.server import services
from app.shell import Dashboard

pn.extension(notifications=False)
hv.extension("bokeh", logo=False)

Dashboard(services()).servable(title="crbm-explorer")
