"""A minimal Bokeh server app for the hubtwist recipe (docs/recipes.md)."""

from bokeh.io import curdoc
from bokeh.models import Div

curdoc().add_root(Div(text="recipe-bokeh-ok"))
