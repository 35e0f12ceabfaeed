import math

import pytest
import torch

import adaptnet
from adaptnet.metrics.adaptive import (accuracy_at_budgets, apply_thresholds, budgeted_curve, confidences, curve_area,
                                       early_exit_predict, exit_points, exit_shares, find_thresholds)
from adaptnet.techniques import IMTANet


def _probs_from_confidence(confidence, predicted):
    """Two-class probabilities whose max is `confidence` (≥ 0.5) on class `predicted`."""
    conf = torch.tensor(confidence, dtype=torch.float64)
    pred = torch.tensor(predicted)
    probs = torch.stack([1 - conf, conf], dim=-1)
    return torch.where(pred[..., None] == 1, probs, probs.flip(-1))


def test_constructed_budgeted_example():
    # 3 exits, 10 held-out samples.
    val = _probs_from_confidence([
        [.95, .90, .85, .80, .75, .70, .65, .60, .55, .52],   # exit 1
        [.99, .98, .60, .97, .96, .58, .57, .56, .94, .51],   # exit 2
        [.60] * 10,                                             # exit 3
    ], [[1] * 10] * 3)
    shares = torch.tensor([0.3, 0.3, 0.4])
    thresholds = find_thresholds(confidences(val)[0], shares)
    # Exit 1: 3rd most confident = .85 → samples 0,1,2 exit. Exit 2 among the rest (3..9): .97,.96,.94 → .94.
    assert thresholds[0].item() == pytest.approx(.85)
    assert thresholds[1].item() == pytest.approx(.94)
    assert thresholds[2].item() == -1e8
    # Test set: a tie at .85 exits at 1; .93 < .94 goes on to exit 3.
    test = _probs_from_confidence([[.85, .84, .20 + .7], [.99, .93, .5], [.6, .6, .6]], [[1, 1, 0], [1, 1, 1], [0, 1, 1]])
    labels = torch.tensor([1, 1, 1])
    confidence, predictions = confidences(test)
    assert exit_points(confidence, thresholds).tolist() == [0, 2, 0]
    accuracy, cost, counts = apply_thresholds(confidence, predictions, labels, thresholds, [10.0, 20.0, 30.0])
    assert counts == [2, 0, 1]
    assert cost == pytest.approx((2 * 10 + 30) / 3)
    assert accuracy == pytest.approx(100 * 2 / 3)  # sample 2 exits at 1 predicting class 0


def _reference_thresholds(probs, shares):
    """A literal port of the official sample-by-sample loop: the spec the vectorised version must meet."""
    num_exits, n, _ = probs.shape
    max_preds = probs.max(dim=2).values
    sorted_idx = max_preds.sort(dim=1, descending=True, stable=True).indices
    filtered = torch.zeros(n)
    thresholds = torch.full((num_exits,), 1e8, dtype=probs.dtype)
    for k in range(num_exits - 1):
        count, out_n = 0, math.floor(n * float(shares[k]))
        for i in range(n):
            ori = sorted_idx[k][i]
            if filtered[ori] == 0:
                count += 1
                if count == out_n:
                    thresholds[k] = max_preds[k][ori]
                    break
        filtered += (max_preds[k] >= thresholds[k]).float()
    thresholds[-1] = -1e8
    return thresholds


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0, 1.45, 2.0])
def test_vectorised_thresholds_equal_the_reference_loop(q):
    torch.manual_seed(int(q * 100))
    probs = torch.randn(5, 300, 10).mul(3).softmax(2)
    shares = exit_shares(q, 5)
    assert torch.equal(find_thresholds(confidences(probs)[0], shares), _reference_thresholds(probs, shares))


def test_exit_shares_are_geometric():
    torch.testing.assert_close(exit_shares(0.5, 5), torch.tensor([.516, .258, .129, .065, .032], dtype=torch.float64),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(exit_shares(2.0, 5), exit_shares(0.5, 5).flip(0))


def test_curve_area_and_interpolation():
    torch.manual_seed(0)
    probs = torch.randn(4, 200, 10).mul(2).softmax(2)
    labels = torch.randint(0, 10, (200,))
    curve = budgeted_curve(probs, probs, labels, [1.0, 2.0, 3.0, 4.0])
    assert len(curve) == 40 and curve[0].q == 0.05 and curve[-1].q == 2.0
    costs = sorted(p.cost for p in curve)
    assert 1.0 <= costs[0] <= costs[-1] <= 4.0
    accs = [p.accuracy for p in curve]
    assert min(accs) <= curve_area(curve) <= max(accs)
    inside, outside = accuracy_at_budgets(curve, [(costs[0] + costs[-1]) / 2, 100.0])
    assert outside is None and min(accs) <= inside <= max(accs)


def test_curve_area_is_cost_weighted_not_a_plain_mean():
    """Unevenly spaced costs: the area is the trapezoid integral over cost divided by the cost range."""
    from adaptnet.metrics.adaptive import BudgetPoint

    points = [BudgetPoint(q=q, cost=c, accuracy=a, exit_counts=[], thresholds=[])
              for q, c, a in ((0.1, 1.0, 50.0), (0.2, 2.0, 60.0), (0.3, 10.0, 90.0))]
    # (50+60)/2·1 + (60+90)/2·8 over a width of 9; the plain mean would be 66.67, the trapezoid mean
    # of the three accuracies 65.
    assert curve_area(points) == pytest.approx((55.0 * 1 + 75.0 * 8) / 9)
    assert curve_area(points[::-1]) == pytest.approx(curve_area(points))  # sorted by cost first


@pytest.mark.parametrize("wrap_imta", [False, True])
def test_real_early_exit_equals_simulated_sample_by_sample(wrap_imta):
    torch.manual_seed(0)
    model = adaptnet.create_model("msdnet_cifar_budgeted", 10)
    if wrap_imta:
        model = IMTANet(model, 10)
    model = model.double().eval()
    images = torch.randn(96, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        probs = torch.stack([z.softmax(1) for z in model(images)])
    for q in (0.3, 1.0, 1.8):
        confidence, predictions = confidences(probs)
        thresholds = find_thresholds(confidence, exit_shares(q, 5))
        simulated_exits = exit_points(confidence, thresholds)
        simulated_preds = predictions.gather(0, simulated_exits[None]).squeeze(0)
        preds, exits = early_exit_predict(model, images, thresholds)
        assert torch.equal(exits, simulated_exits)
        assert torch.equal(preds, simulated_preds)
        assert len(set(exits.tolist())) > 1  # the thresholds really split the batch
