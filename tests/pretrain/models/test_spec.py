import pytest

from pretrain.models.spec import SubnetError, SubnetSpec, check_contained, parse_subnets


@pytest.mark.parametrize("text", ["w1.0", "w0.75", "w0.5", "w0.25", "w1.0-d2.2.2.2", "w0.5-d1.4.6.3"])
def test_canonical_form_round_trips(text):
    spec = SubnetSpec.parse(text)
    assert str(spec) == text
    assert SubnetSpec.parse(str(spec)) == spec


def test_parse_values():
    spec = SubnetSpec.parse("w1.0-d2.2.2.2")
    assert spec.width == 1.0 and spec.depth == (2, 2, 2, 2)
    assert str(SubnetSpec(1)) == "w1.0"
    assert parse_subnets("w1.0,w0.5") == [SubnetSpec(1.0), SubnetSpec(0.5)]


@pytest.mark.parametrize("bad", ["", "0.5", "w", "wx", "w0.5-d", "w0.5-d2..2", "w1.5", "w0.0", "w0.5-d0.1.1.1"])
def test_malformed_strings_raise(bad):
    with pytest.raises(SubnetError):
        SubnetSpec.parse(bad)


def test_not_contained_lists_what_the_network_has():
    widths, blocks = [1.0, 0.75, 0.5, 0.25], (3, 4, 6, 3)
    with pytest.raises(SubnetError, match=r"1\.0, 0\.75, 0\.5, 0\.25.*d3\.4\.6\.3"):
        check_contained(SubnetSpec.parse("w0.6"), widths, blocks)
    with pytest.raises(SubnetError, match="d3.4.6.3"):
        check_contained(SubnetSpec.parse("w0.5-d4.4.6.3"), widths, blocks)
    with pytest.raises(SubnetError, match="4 stages"):
        check_contained(SubnetSpec.parse("w0.5-d1.1.1"), widths, blocks)
    # a full depth is the plain width
    assert check_contained(SubnetSpec.parse("w0.5-d3.4.6.3"), widths, blocks) == SubnetSpec(0.5)
