"""ControlNet, as sd-webui-controlnet's always-on script: ``alwayson_scripts: {"controlnet": {"args": [unit,
...]}}`` with the extension's unit fields (modules.controlnet.units).  The script takes
``control_net_unit_count`` units (setting, 3 by default); a request may send fewer (the others are off), not
more.  The work is in modules.controlnet.apply: the units are prepared before the first batch, the sampler step
is noted before each step, and every UNet call gets the units' residuals; the infotext gets the extension's
``ControlNet N`` entries."""
from __future__ import annotations

from modules.controlnet import apply, units
from modules.scripts import Arg, Script

DEFAULT_UNITS = 3


class ControlNet(Script):
    title = "ControlNet"
    show = "both"
    alwayson = True

    def unit_count(self) -> int:
        opts = getattr(self.app, "opts", None)
        try:
            n = opts.get("control_net_unit_count") if opts is not None else DEFAULT_UNITS
            return max(1, int(n))
        except (KeyError, TypeError, ValueError):
            return DEFAULT_UNITS

    def args(self, is_img2img):
        off = units.parse_unit(None)
        return [Arg(f"unit_{i}", f"ControlNet Unit {i}", "object", dict(off), parse=units.parse_unit)
                for i in range(self.unit_count())]

    def unit_list(self, a) -> list[dict]:
        return [a[k] for k in sorted((k for k in a if k.startswith("unit_")), key=lambda k: int(k[5:]))]

    def enabled(self, a) -> bool:
        return any(units.is_active(u) for u in self.unit_list(a))

    def library(self):
        lib = getattr(self.app, "controlnets", None)
        if lib is None:
            raise RuntimeError("ControlNet needs the app's ControlNet library")
        return lib

    def ui_extra(self, tab, comps, is_img2img):
        from modules.ui import controlnet_ui
        return controlnet_ui.build(self.app, tab, is_img2img, self.unit_count())

    def ui_wire(self, tab, comps, is_img2img):
        from modules.ui import controlnet_ui
        holders = [comps[f"unit_{i}"] for i in range(self.unit_count())]
        controlnet_ui.wire(self.app, tab, comps, holders, is_img2img)

    def ui_paste(self, params, is_img2img):
        """The infotext's "ControlNet N" units into the unit tabs, in order; the tabs after them are turned
        off so the pasted recipe runs as written (an infotext without ControlNet leaves the tabs alone)."""
        from modules.ui import controlnet_ui
        found = apply.units_from_infotext(params)
        if not found:
            return {}
        found = found[:self.unit_count()]
        out = controlnet_ui.units_to_updates(found, self.app)
        for i in range(len(found), self.unit_count()):
            out[f"cn{i}_enabled"] = False
        return out

    def before_job(self, ctx, a):
        ctx.state[apply.STATE_KEY] = apply.prepare(ctx, self.library(), self.unit_list(a))

    def before_step(self, ctx, step, a):
        job = ctx.state.get(apply.STATE_KEY)
        if job is not None:
            job.step = (int(step.index), int(step.steps))

    def unet_call(self, ctx, unet, a):
        return apply.wrap(ctx, unet)

    def infotext(self, a):
        lib = getattr(self.app, "controlnets", None)
        title_of = (lambda name: lib.find(name).title) if lib is not None else None
        return apply.infotext_params(self.unit_list(a), title_of)
