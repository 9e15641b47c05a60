"""Feast objects of this Tally project, built from its metrics/ definitions.

`feast -c feature_repo apply` imports this file; `tally apply` builds the same objects.
"""

from pathlib import Path

from tally.feature_repo.bridge import feast_objects

globals().update(feast_objects(Path(__file__).resolve().parent.parent))
