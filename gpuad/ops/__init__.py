"""gpuad's differentiable operations.  ``gpuad.xp`` re-exports them by their
array-API names; rules in here call each other, never a backend namespace."""

from ._creation import *  # noqa: F401,F403
from ._elementwise import *  # noqa: F401,F403
from ._indexing import *  # noqa: F401,F403
from ._manipulation import *  # noqa: F401,F403
from ._triangular import *  # noqa: F401,F403
from ._matmul import *  # noqa: F401,F403
from ._reductions import *  # noqa: F401,F403
from ._linalg import *  # noqa: F401,F403
from ._decompositions import *  # noqa: F401,F403
from ._searching import *  # noqa: F401,F403
from ._dtype_functions import *  # noqa: F401,F403
