import outcrop


def _kind(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions and the rest — the order ruff's RUF022 keeps.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_importable():
    assert outcrop.__all__ == sorted(outcrop.__all__, key=_kind)
    for name in outcrop.__all__:
        assert hasattr(outcrop, name), name


def test_test_doubles_are_public():
    from outcrop.providers.testing import FunctionModel, TestModel

    assert TestModel.__doc__ and FunctionModel.__doc__
