"""The file a hook runs directly: ``/usr/bin/python3 -I -S /path/to/transformer/copyup/hook.py``.

Faster than the pip console script (no site, no ``re``), and tiny on purpose: Python
compiles a script on every run but imports main.py from its cached bytecode.
"""

import os
import sys

if __name__ == "__main__":
    # -I leaves the script's directory off sys.path; add the one holding transformer/.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from transformer.copyup.main import main

    sys.exit(main())
