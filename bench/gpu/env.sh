# Sourced on the GPU machine, from the repository root, with .whl carried there
# (see prepare.sh): installs the wheels it lacks aside and puts them and tconv
# on PYTHONPATH.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/tconv-site .whl/*.whl
export PYTHONPATH="/tmp/tconv-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
