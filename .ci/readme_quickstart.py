"""Run the README's Python blocks against an installed pysnn, not the checkout.

Usage (from a directory outside the checkout, with the venv the wheel was installed into)::

    python /path/to/checkout/.ci/readme_quickstart.py /path/to/checkout/README.md
"""

import re
import sys
from pathlib import Path

readme = Path(sys.argv[1]).resolve()
checkout = readme.parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != checkout]

import pysnn  # noqa: E402

where = Path(pysnn.__file__).resolve()
assert checkout not in where.parents, f"pysnn imported from the checkout ({where}), not the wheel"
blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
assert blocks, "no Python block in the README"
exec(compile("\n".join(blocks), str(readme), "exec"), {})
print(
    f"README quickstart: {len(blocks)} blocks ran with pysnn {pysnn.__version__} from {where.parent}"
)
