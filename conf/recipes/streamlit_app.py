"""A minimal Streamlit app for the hubtwist recipe (docs/recipes.md)."""

import streamlit as st

st.title("Streamlit behind hubtwist")
st.write("recipe-streamlit-ok")
