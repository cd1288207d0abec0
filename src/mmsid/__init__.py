"""mmsid: multimodal semantic IDs for recommendation."""

__version__ = "0.1.0"


def run(config, **kw):
    """The main job from Python: ``mmsid.run(PipelineConfig(...))`` or
    ``mmsid.run({"dataset": ..., "out": ..., ...})`` (a dict is resolved like the CLI:
    defaults < budget preset < the dict). Returns the results object (also results.json)."""
    from mmsid import pipeline

    if isinstance(config, dict):
        config = dict(config)
        ds, out = config.pop("dataset"), config.pop("out", "runs/run")
        config = pipeline.resolve_config(ds, out, cli=config)
    return pipeline.run(config, **kw)
