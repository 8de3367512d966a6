"""Every place inside a JSON document, for property tests that change one at random."""


def paths(node, path: tuple = ()):
    """The path (keys and indexes) of every value under ``node``, the root excluded."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for step, child in items:
        yield path + (step,)
        yield from paths(child, path + (step,))


def parent(doc, path: tuple):
    """The dict or list holding the value at ``path``."""
    for step in path[:-1]:
        doc = doc[step]
    return doc
