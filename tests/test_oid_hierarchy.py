"""The Open Images hierarchy on a small hand-made tree: depths, ancestors, the layer0/layer1
split (multi-parent classes included), expansion, and malformed files."""
from __future__ import annotations

import json

import pytest

from records.class_hierarchy import (
    LAYER0,
    LAYER1,
    GroupDecision,
    Hierarchy,
    HierarchyError,
    load_hierarchy,
)


def node(name: str, *children: dict) -> dict:
    return {"LabelName": name, "Subcategory": list(children)} if children else {"LabelName": name}


# root
#   animal > mammal > {dog, bear > teddy}, fish
#   toy > {teddy, frisbee}          teddy: depth 1 (toy) and 3 (animal > mammal > bear)
#   sports > frisbee                frisbee: two depth-0 parents at the same depth
#   person > {man, woman}           a depth-0 class with children
#   rock                            a depth-0 leaf
#   tool > knife; weapon > knife... knife also under tool > utensil (depths 1 and 2)
TREE = node("/m/root",
            node("animal", node("mammal", node("dog"), node("bear", node("teddy"))),
                 node("fish")),
            node("toy", node("teddy"), node("frisbee")),
            node("sports", node("frisbee")),
            node("person", node("man"), node("woman")),
            node("rock"),
            node("tool", node("utensil", node("knife"))),
            node("weapon", node("knife")))


@pytest.fixture(scope="module")
def tree() -> Hierarchy:
    return Hierarchy.from_json(TREE, "tree.json")


def test_classes_in_file_order_without_the_root(tree):
    assert tree.root == "/m/root" and "/m/root" not in tree
    assert tree.classes[:6] == ["animal", "mammal", "dog", "bear", "teddy", "fish"]
    assert len(tree) == 17


def test_depths_and_parents(tree):
    assert tree.depth("animal") == 0 and tree.depth("dog") == 2 and tree.depth("fish") == 1
    assert tree.depths("teddy") == (1, 3) and tree.depth("teddy") == 1
    assert tree.depths("knife") == (1, 2)
    assert tree.parents("teddy") == ("bear", "toy") and tree.parents("animal") == ()
    assert tree.children("person") == ("man", "woman")
    assert tree.has_children("person") and not tree.has_children("rock")


def test_ancestors_nearest_first_and_descendants(tree):
    assert tree.ancestors("dog") == ("mammal", "animal")
    assert tree.ancestors("teddy") == ("bear", "toy", "mammal", "animal")
    assert tree.ancestors("rock") == ()
    assert tree.expand("dog") == ("dog", "mammal", "animal")
    assert set(tree.descendants("animal")) == {"mammal", "dog", "bear", "teddy", "fish"}
    assert tree.is_ancestor("animal", "teddy") and not tree.is_ancestor("teddy", "animal")
    with pytest.raises(KeyError, match="cat is not in the hierarchy"):
        tree.ancestors("cat")


def test_layer0_relabels_to_the_top_of_the_shallowest_path(tree):
    assert tree.map_to_group("dog", LAYER0) == GroupDecision(("animal",))
    assert tree.map_to_group("animal", LAYER0) == GroupDecision(("animal",))
    assert tree.map_to_group("teddy", LAYER0).labels == ("toy",)  # not animal (depth 3)
    assert tree.map_to_group("frisbee", LAYER0).labels == ("toy", "sports")  # a tie: both
    assert tree.map_to_group("knife", LAYER0).labels == ("weapon",)
    # With expansion every ancestor is mapped: all depth-0 ancestors, as the challenge scores.
    assert tree.map_to_group("teddy", LAYER0, expand=True).labels == ("toy", "animal")
    assert tree.map_to_group("knife", LAYER0, expand=True).labels == ("weapon", "tool")
    assert tree.group_classes(LAYER0) == ["animal", "toy", "sports", "person", "rock", "tool",
                                          "weapon"]


def test_layer1_keeps_deeper_classes_drops_depth0_and_grays_those_with_children(tree):
    assert tree.map_to_group("dog", LAYER1) == GroupDecision(("dog",))
    assert tree.map_to_group("teddy", LAYER1) == GroupDecision(("teddy",))
    assert tree.map_to_group("person", LAYER1) == GroupDecision((), gray=True)
    assert tree.map_to_group("rock", LAYER1) == GroupDecision((), gray=False)
    assert tree.map_to_group("person", LAYER1, expand=True) == GroupDecision((), gray=True)
    assert tree.map_to_group("dog", LAYER1, expand=True).labels == ("dog", "mammal")
    assert tree.map_to_group("man", LAYER1, expand=True) == GroupDecision(("man",))
    assert "animal" not in tree.group_classes(LAYER1)
    assert set(tree.group_classes(LAYER0)) | set(tree.group_classes(LAYER1)) == set(tree.classes)


def test_no_group_is_the_class_or_its_expansion(tree):
    assert tree.map_to_group("teddy", None).labels == ("teddy",)
    assert tree.map_to_group("teddy", None, expand=True).labels == (
        "teddy", "bear", "toy", "mammal", "animal")


def test_a_class_at_depth_0_and_deeper_is_in_both_layers():
    both = Hierarchy.from_json(node("r", node("a", node("b")), node("b")))
    assert both.depths("b") == (0, 1)
    assert both.in_group("b", LAYER0) and both.in_group("b", LAYER1)
    assert both.map_to_group("b", LAYER0).labels == ("b",)
    assert both.map_to_group("b", LAYER1) == GroupDecision(("b",))


def test_relations_restricted_to_the_label_map(tree):
    relations = tree.relations(["dog", "animal", "teddy", "unknown"])
    assert relations == {"dog": (("animal",), ()), "animal": ((), ("dog", "teddy")),
                         "teddy": (("animal",), ())}


@pytest.mark.parametrize("data, phrase", [
    ([], "top level must be an object"),
    ({"LabelName": "r", "Subcategory": {"LabelName": "a"}}, "'Subcategory' must be a list"),
    ({"LabelName": "r", "Subcategory": [{"Name": "a"}]}, "r Subcategory[0] needs a 'LabelName'"),
    (node("r", node("a", node("r"))), "the root r appears as a subcategory"),
    (node("r", node("a", node("b", node("a")))), "cycle: "),
])
def test_malformed_hierarchies_are_named(data, phrase):
    with pytest.raises(HierarchyError, match="tree.json") as err:
        Hierarchy.from_json(data, "tree.json")
    assert phrase in str(err.value)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "h.json"
    path.write_text("{oops")
    with pytest.raises(HierarchyError, match="h.json: .*invalid JSON"):
        load_hierarchy(path)
    path.write_text(json.dumps(TREE))
    assert load_hierarchy(path).depth("dog") == 2


@pytest.mark.realdata
def test_real_hierarchy(realdata):
    hierarchy = load_hierarchy(realdata / "openimages_meta/bbox_labels_600_hierarchy.json")
    assert hierarchy.root == "/m/0bl9f" and "/m/0bl9f" not in hierarchy
    assert len(hierarchy) == 601
    dog, teddy, person = "/m/0bt9lr", "/m/0kmg4", "/m/01g317"
    assert hierarchy.depth(dog) == 3 and hierarchy.depths(teddy) == (1, 4)
    assert hierarchy.map_to_group(teddy, LAYER0).labels == ("/m/0138tl",)  # Toy
    assert hierarchy.map_to_group(person, LAYER1) == GroupDecision((), gray=True)
    assert len(hierarchy.group_classes(LAYER0)) == 90
