"""Block-group units (plan ``Unit``s): bottleneck, residual, mbconv with squeeze-excitation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import skip_init

from specgraph import BackendError, Unit

from ._ops import ConvNormAct, hard_sigmoid, init_variance_scaling

__all__ = ["BottleneckUnit", "MBConvUnit", "ResidualUnit", "SqueezeExcitation", "StochasticDepth", "make_unit"]

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]


class StochasticDepth(nn.Module):
    """Drops the whole residual branch per sample in training; kept samples are scaled by 1/keep."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise BackendError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
        return x / keep * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class BottleneckUnit(nn.Module):
    def __init__(self, unit: Unit, norm: NormFactory, act: ActFactory, drop_rate: float) -> None:
        super().__init__()
        f, out = unit.filters, unit.out_channels
        self.shortcut = (ConvNormAct(unit.in_channels, out, 1, unit.stride, norm=norm(out))
                         if unit.projection else None)
        self.conv1 = ConvNormAct(unit.in_channels, f, 1, norm=norm(f), act=act())
        self.conv2 = ConvNormAct(f, f, 3, unit.stride, norm=norm(f), act=act())
        self.conv3 = ConvNormAct(f, out, 1, norm=norm(out))
        self.drop = StochasticDepth(drop_rate)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.drop(self.conv3(self.conv2(self.conv1(x)))) + short)


class ResidualUnit(nn.Module):
    def __init__(self, unit: Unit, norm: NormFactory, act: ActFactory, drop_rate: float) -> None:
        super().__init__()
        f = unit.filters
        self.shortcut = (ConvNormAct(unit.in_channels, unit.out_channels, 1, unit.stride, norm=norm(unit.out_channels))
                         if unit.projection else None)
        self.conv1 = ConvNormAct(unit.in_channels, f, 3, unit.stride, norm=norm(f), act=act())
        self.conv2 = ConvNormAct(f, unit.out_channels, 3, norm=norm(unit.out_channels))
        self.drop = StochasticDepth(drop_rate)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.drop(self.conv2(self.conv1(x))) + short)


class SqueezeExcitation(nn.Module):
    """``x * hard_sigmoid(expand(relu(reduce(mean_hw(x)))))``; the only convs with a bias."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.reduce = skip_init(nn.Conv2d, channels, se_channels, 1)  # initialised below
        self.expand = skip_init(nn.Conv2d, se_channels, channels, 1)
        for conv in (self.reduce, self.expand):
            init_variance_scaling(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * hard_sigmoid(self.expand(torch.relu(self.reduce(s))))


class MBConvUnit(nn.Module):
    def __init__(self, unit: Unit, norm: NormFactory, act: ActFactory, drop_rate: float) -> None:
        super().__init__()
        mid = unit.expand_channels if unit.expand else unit.in_channels
        self.expand = ConvNormAct(unit.in_channels, mid, 1, norm=norm(mid), act=act()) if unit.expand else None
        self.depthwise = ConvNormAct(mid, mid, 3, unit.stride, groups=mid, norm=norm(mid), act=act())
        self.se = SqueezeExcitation(mid, unit.se_channels) if unit.se_channels > 0 else None
        self.project = ConvNormAct(mid, unit.out_channels, 1, norm=norm(unit.out_channels))
        self.residual = unit.residual
        self.drop = StochasticDepth(drop_rate if unit.residual else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return self.drop(y) + x if self.residual else y


_UNITS: dict[str, type[nn.Module]] = {"bottleneck": BottleneckUnit, "residual": ResidualUnit, "mbconv": MBConvUnit}


def make_unit(unit: Unit, norm: NormFactory, act: ActFactory, drop_rate: float) -> nn.Module:
    if unit.type not in _UNITS:
        raise BackendError(f"the torch backend has no unit type {unit.type!r}")
    return _UNITS[unit.type](unit, norm, act, drop_rate)
