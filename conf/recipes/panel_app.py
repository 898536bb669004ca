"""A minimal Panel app for the hubtwist recipe (docs/recipes.md)."""

import panel as pn

pn.pane.Markdown("recipe-panel-ok").servable()
