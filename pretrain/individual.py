"""Individually pretrained baselines: recipe X narrowed to one of its sub-networks, trained alone.

Both seed papers compare each slimmable sub-network with a network of that width (and depth)
pretrained on its own with the same method. ``individual_recipe`` keeps X's method, data,
augmentation, optimizer, per-step learning-rate and momentum schedule, batch and length, and
removes every sub-network term: one width (``model.widths = [w]``, so one BatchNorm per layer),
no slow start, no distillation, no re-weighting (SlimCLR: MoCo v2 / v3 alone); DSPNet trains only
that network (BYOL alone). SlimCLR's ``slim_start_lr`` belongs to the sub-networks' phase and is
dropped with it: the baseline follows X's schedule with ``optim.lr`` throughout.
The checkpoint records ``extra['individual']``: X's recipe digest and the sub-network, so the
leaderboard pairs it with X's slimmable run by that record, never by file names.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

from pretrain.errors import ConfigError
from pretrain.recipe import BYOLRecipe, Recipe, SlimCLRRecipe, recipe_digest
from pretrain.models.resnet import ARCHS, parse_arch
from pretrain.models.spec import SubnetError, SubnetSpec, check_contained, format_width


def baseline_subnets(recipe: Recipe) -> List[SubnetSpec]:
    """What ``--individual all`` trains: every listed width at full depth, then DSPNet's desired depth variants."""
    out = [SubnetSpec(w) for w in recipe.model.widths]
    if isinstance(recipe.method, BYOLRecipe):
        out += [SubnetSpec.parse(d) for d in recipe.method.desired]
    stage_blocks = ARCHS[parse_arch(recipe.model.arch)][1]
    return list(dict.fromkeys(s.canonical(stage_blocks) for s in out))


def individual_recipe(recipe: Recipe, subnet: "str | SubnetSpec", source: str) -> Tuple[Recipe, Dict[str, Any]]:
    """``recipe`` narrowed to ``subnet`` trained alone, and the record its checkpoint keeps."""
    stage_blocks = ARCHS[parse_arch(recipe.model.arch)][1]
    try:
        spec = check_contained(SubnetSpec.parse(subnet), recipe.model.widths, stage_blocks)
    except SubnetError as e:
        raise ConfigError(f"{source}: --individual {subnet}: {e}") from None
    if spec.depth is not None and not isinstance(recipe.method, BYOLRecipe):
        raise ConfigError(f"{source}: --individual {spec}: {recipe.method.name} trains full-depth networks only; "
                          f"expected one of {', '.join(f'w{format_width(w)}' for w in recipe.model.widths)}")
    narrow = copy.deepcopy(recipe)
    narrow.model.widths = [spec.width]
    method = narrow.method
    if isinstance(method, SlimCLRRecipe):
        method.slim_start_epoch, method.slim_start_lr, method.distill = 0.0, None, "none"
    elif isinstance(method, BYOLRecipe):
        method.desired, method.depths, method.num_random, method.sample = [str(spec)], [], 0, "desired"
    record = {"of_recipe_digest": recipe_digest(recipe), "subnet": str(spec), "method": method.name}
    return narrow, record
