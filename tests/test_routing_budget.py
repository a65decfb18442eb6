# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Routing to a MAdds budget: the penalty solver, the classifier's routing
under a penalty, and the hook that fits it after each epoch."""
import pytest
import torch
from mmengine.logging import MMLogger

from dsnet_mm.engine import RoutingBudgetHook
from dsnet_mm.models.routing import budget_penalty, penalized_choice
from test_gate import batch, build

COSTS = torch.tensor([0.25, 0.5, 1.0])


def spent(logits, penalty, costs=COSTS):
    costs = costs.double()
    return float(costs[(logits.double() - penalty * costs).argmax(-1)].mean())


def test_penalty_spends_the_most_within_the_budget():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 3, generator=g)
    free = spent(logits, 0.0)
    for budget in (0.3, 0.5, 0.62, 0.9):
        penalty = budget_penalty(logits, COSTS, budget)
        assert spent(logits, penalty) <= budget
        # the next smaller penalty that routes otherwise overspends: no
        # routing that spends more within the budget is left on the table
        routed = penalized_choice(logits, COSTS, penalty)
        lower = next(p for p in penalty - 1e-3 * torch.arange(1, 10**4)
                     if not torch.equal(penalized_choice(logits, COSTS, p),
                                        routed))
        assert spent(logits, lower) > budget
        # spending less than the gate alone needs a positive penalty
        assert (penalty > 0) == (budget < free)


def test_penalty_routes_hand_made_logits_by_their_margin():
    # images 0-3: the gate prefers the widest by margins 4, 3, 2, 1
    logits = torch.zeros(4, 3)
    logits[:, 2] = torch.tensor([4., 3., 2., 1.])
    # budget for two of four images wide, two narrow: 0.625
    penalty = budget_penalty(logits, COSTS, 0.625)
    assert penalized_choice(logits, COSTS, penalty).tolist() == [2, 2, 0, 0]
    # image b goes wide while margin_b > 0.75 * penalty: two images wide
    # for penalties in [8/3, 4), and the penalty is halfway
    assert penalty == pytest.approx(10 / 3)


def test_budget_outside_the_window_is_refused():
    with pytest.raises(ValueError, match=r'budget must be in \[0.2500, 1\]'):
        budget_penalty(torch.zeros(2, 3), COSTS, 0.2)
    with pytest.raises(TypeError, match='budget must be a number'):
        RoutingBudgetHook(budget='half')
    with pytest.raises(ValueError, match='budget must be a number'):
        RoutingBudgetHook(budget=0)
    with pytest.raises(ValueError, match='num_batches'):
        RoutingBudgetHook(budget=0.5, num_batches=0)


def test_fitted_penalty_routes_every_path_alike_and_is_saved():
    model = build(backbone=None)
    data = model.data_preprocessor(batch(32), False)
    inputs = data['inputs']
    with torch.no_grad():
        _, gate_logits, free = model.forward_dynamic(inputs, 'bucket')
        costs = model.relative_costs(inputs.shape[1:])
        spent_free = float(costs[free].mean())
        budget = (float(costs[0]) + spent_free) / 2
        reached = model.fit_budget(gate_logits, inputs.shape[1:], budget)
        assert reached <= budget < spent_free
        results = {m: model.forward_dynamic(inputs, m)
                   for m in ('slice', 'bucket', 'mask')}
    choice = results['bucket'][2]
    assert float(costs[choice].mean()) == pytest.approx(reached)
    for mode in ('slice', 'mask'):
        assert torch.equal(results[mode][2], choice)
        torch.testing.assert_close(results[mode][0], results['bucket'][0],
                                   atol=1e-5, rtol=1e-5)
    # the penalty is part of the checkpoint
    state = model.state_dict()
    assert float(state['cost_penalty']) == float(model.cost_penalty) != 0
    other = build(backbone=None)
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other.forward_dynamic(inputs, 'bucket')[2], choice)


def test_hook_fits_the_budget_on_the_training_batches():
    model = build(backbone=None)
    loader = [batch(16), batch(16)]

    class Runner:
        train_dataloader = loader
        logger = MMLogger.get_instance('test_routing_budget')

    Runner.model = model
    model.train()
    RoutingBudgetHook(budget=0.9).after_train_epoch(Runner())
    assert model.training  # mode restored (the supernet itself stays eval)
    with torch.no_grad():
        inputs = model.data_preprocessor(loader[0], False)['inputs']
        gate_logits = torch.cat([
            model.backbone.forward_pre_gate(
                model.data_preprocessor(b, False)['inputs'])[1]
            for b in loader])
    costs = model.relative_costs(inputs.shape[1:])
    assert float(model.cost_penalty) == pytest.approx(
        budget_penalty(gate_logits, costs, 0.9))
