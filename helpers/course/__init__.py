"""Course tooling for instructors, apart from the teaching modules students import.

Nothing in the teaching modules (``helpers.data``, ``helpers.pruning``, ...) imports this
package. Its command line is ``python -m helpers.course generate|check|grade`` (``cli``).

- ``labs``: read nbgrader-style source notebooks, generate ``labs/`` from ``solutions/``,
  check that they are in sync and leak nothing;
- ``kernel``: run cells in a fresh kernel under time and memory limits;
- ``forkserver``: start grading workers and kernels as forks of one process that has
  imported TensorFlow once;
- ``grading``: the autograder, one submission (``grade``) or many in parallel
  (``grade_many``);
- ``report``: the text report, the score CSV (atomic, sorted, resumable) and the HTML page;
- ``integrity``: checks that hidden tests run on graded functions (own code only);
- ``cli``: the command line.
"""
__all__: list[str] = []
