"""The registries: the one name table of attrbench.

Every method, metric, model and preset is named here, once. Heavy modules are registered lazily
as ``"module:Attr"`` strings so that ``attrbench --help`` and ``attrbench list`` stay instant.
"""

from __future__ import annotations

from .interfaces import AttributionMethod, Metric
from .plugins import METHOD_GROUP, METRIC_GROUP, entry_point_source, method_plugin, metric_plugin
from .registry import Registry

# Besides the names below, METHODS and METRICS take plugins (attrbench.plugins): any
# "package.module:Attr" import path, and the entry points of installed packages.
METHODS: Registry[type[AttributionMethod]] = Registry(
    "method", base=AttributionMethod, adapt=method_plugin,
    entry_points=entry_point_source(METHOD_GROUP))
METRICS: Registry[type[Metric]] = Registry(
    "metric", base=Metric, adapt=metric_plugin, entry_points=entry_point_source(METRIC_GROUP))
MODELS: Registry = Registry("model")
EXPLAINER_ARCHS: Registry = Registry("explainer architecture")
PRESETS: Registry = Registry("preset")

# ----------------------------------------------------------------------------- methods
_M = "attrbench.methods"
METHODS.register("explainer", f"{_M}.explainer:Explainer", summary="Stalder et al. 2022 (trained)")
METHODS.register("rt_saliency", f"{_M}.explainer:RTSaliency", aliases=["dabkowski17"],
                 summary="Dabkowski & Gal 2017, adapted as in the paper")
METHODS.register("gradcam", f"{_M}.cam:GradCAM", aliases=["grad_cam"],
                 summary="Selvaraju et al. 2017")
METHODS.register("gradcam_pp", f"{_M}.cam:GradCAMPlusPlus", aliases=["gradcam++"],
                 summary="Chattopadhay et al. 2018")
METHODS.register("rise", f"{_M}.rise:RISE", summary="Petsiuk et al. 2018")
METHODS.register("extremal_perturbations", f"{_M}.extremal:ExtremalPerturbations",
                 aliases=["ep", "fong19"], summary="Fong et al. 2019")
METHODS.register("guided_backprop", f"{_M}.guided_backprop:GuidedBackprop",
                 summary="Springenberg et al. 2015")
METHODS.register("igos_pp", f"{_M}.igos:IGOSPP", aliases=["igos++"], summary="Khorram et al. 2021")
METHODS.register("ideal", f"{_M}.sanity:Ideal", aliases=["perfect"],
                 summary="the ground-truth mask (upper reference)")
METHODS.register("center", f"{_M}.sanity:Center", summary="a centred Gaussian")
METHODS.register("constant_0", f"{_M}.sanity:Constant0", summary="all-0 mask")
METHODS.register("constant_0.5", f"{_M}.sanity:Constant05", summary="all-0.5 mask")
METHODS.register("constant_1", f"{_M}.sanity:Constant1", summary="all-1 mask")
METHODS.register("random", f"{_M}.sanity:Random", summary="uniform noise, seeded per image")


def _captum_factory(name: str):
    from .methods.adapters import captum_method

    return captum_method(name)


def _gradcam_lib_factory(name: str):
    from .methods.adapters import gradcam_lib_method

    return gradcam_lib_method(name)


METHODS.register_prefix("captum", _captum_factory)
METHODS.register_prefix("gradcam-lib", _gradcam_lib_factory)

# ----------------------------------------------------------------------------- metrics
_L = "attrbench.metrics.localization"
for _name in ("mean_f1", "cont_f1", "accuracy", "iou_mean", "cont_iou", "auc",
              "object_coverage", "background_coverage", "overlap"):
    _cls = "".join(p.capitalize() for p in _name.split("_"))
    METRICS.register(_name, f"{_L}:{_cls}")
METRICS.register("pointing_game", "attrbench.metrics.pointing:PointingGame")
METRICS.register("pointing_game_difficult", "attrbench.metrics.pointing:PointingGameDifficult",
                 default=False)
METRICS.register("energy_pointing_game", "attrbench.metrics.pointing:EnergyPointingGame")
_P = "attrbench.metrics.perturbation"
METRICS.register("deletion_auc", f"{_P}:DeletionAUC")
METRICS.register("insertion_auc", f"{_P}:InsertionAUC")
METRICS.register("saliency", f"{_P}:SaliencyMetric")
METRICS.register("road_morf", "attrbench.metrics.road:ROADMoRF", default=False)
METRICS.register("road_lerf", "attrbench.metrics.road:ROADLeRF", default=False)
_S = "attrbench.metrics.sparsity"
METRICS.register("gini", f"{_S}:Gini")
METRICS.register("area", f"{_S}:Area")
METRICS.register("entropy", f"{_S}:Entropy")
_C = "attrbench.metrics.specificity"
METRICS.register("class_specificity_diag", f"{_C}:ClassSpecificityDiag")
METRICS.register("class_specificity_offdiag", f"{_C}:ClassSpecificityOffDiag")
_K = "attrbench.metrics.cost"
METRICS.register("time_ms", f"{_K}:TimeMs")
METRICS.register("model_calls", f"{_K}:ModelCalls")
METRICS.register("peak_mem_mb", f"{_K}:PeakMemMb")
METRICS.register("randomization_spearman", "attrbench.metrics.randomization:RandomizationSpearman",
                 default=False)

# ----------------------------------------------------------------------------- models
MODELS.register("synthetic_cnn", "attrbench.models.classifiers:SmallCNN",
                summary="4-block CNN, 16.8 MFLOPs at 64 px (synthetic preset)")
MODELS.register("vgg16", "attrbench.models.classifiers:PaperVGG16",
                summary="VGG-16, frozen ImageNet features, MLP head (paper)")
MODELS.register("resnet50", "attrbench.models.classifiers:PaperResNet50",
                summary="ResNet-50, frozen ImageNet backbone, linear head (paper)")

EXPLAINER_ARCHS.register("unet_small", "attrbench.models.explainer_nets:SmallUNet",
                         summary="4-level U-Net, logits from the full-resolution decoder")
EXPLAINER_ARCHS.register("unet_deep", "attrbench.models.explainer_nets:DeepHeadUNet",
                         summary="U-Net with class logits from its deep features (synthetic "
                                 "preset's Explainer)")
EXPLAINER_ARCHS.register("deeplabv3_resnet50", "attrbench.models.explainer_nets:deeplabv3_resnet50",
                         summary="the paper's Explainer (torchvision DeepLabv3-ResNet50)")

# ----------------------------------------------------------------------------- presets
from .presets import PRESET_OBJECTS as _PRESET_OBJECTS

for _p, _obj in _PRESET_OBJECTS.items():
    PRESETS.register(_p, _obj, summary=_obj.description)
