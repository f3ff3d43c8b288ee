"""Taking the classifier and the dataset out of the app: exports (bundle, Space, dataset, project) and publishing.

Modules: :mod:`.bundle` (the model as safetensors + ONNX + ``predict.py`` with a model card and a
parity report, and the classify-only Space), :mod:`.archive` (dataset and project zips) and
:mod:`.publish` (the Hugging Face Hub). the repository's ``standalone/`` holds the programs an export ships: they
run where neither torch nor this app is installed.
"""
