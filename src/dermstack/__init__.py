"""dermstack: skin-lesion image collections to strong, explainable classifiers."""
import os

# LightGBM and XGBoost use OpenMP; with busy-waiting threads a loaded machine (more runnable threads
# than cores) trains 10x slower. Passive waiting costs nothing when the cores are free. It must be set
# before any OpenMP runtime loads, hence here; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
