"""Course tooling for instructors, apart from the teaching modules students import.

Nothing in the teaching modules (``helpers.data``, ``helpers.pruning``, ...) imports this
package.
"""
__all__: list[str] = []
