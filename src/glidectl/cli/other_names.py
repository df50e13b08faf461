"""Option names users bring from other tools (diffusers' scripts and pipelines, k-diffusion,
CompVis and web-UI samplers), each mapped to what the glidectl command takes instead.

Click's own suggestion goes by spelling (``--model`` → ``--help``); this goes by meaning.
"""

from __future__ import annotations

from typing import Any

# a file of prompts: fit-steps' --prompts, eval's argument; sample's PROMPTS are texts
PROMPT_FILE_NAMES = ("--prompt-file", "--prompt_file", "--prompts-file", "--prompts_file",
                     "--from-file", "--from_file")
# their names → glidectl's, tried in order: the first the command has is named (an
# argument's name, such as ``prompts``, is the command's positional argument)
OTHER_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("--model", "--model-path", "--model_path", "--ckpt", "--checkpoint",
     "--pretrained_model_name_or_path", "--pretrained-model-name-or-path"):
        ("--base", "model", "--set model.init=..."),
    ("--prompt", "--prompts"): ("prompts",),
    PROMPT_FILE_NAMES: ("--prompts", "prompts"),
    ("--num-images", "--num_images", "--n-samples", "--n_samples", "--num-samples",
     "--num_samples", "--num-images-per-prompt", "--num_images_per_prompt", "--n_iter"):
        ("--n",),
    ("--guidance-scale", "--guidance_scale", "--cfg", "--cfg-scale", "--cfg_scale",
     "--scale"): ("--guidance",),
    ("--num-inference-steps", "--num_inference_steps", "--ddim-steps", "--ddim_steps",
     "--sample-steps", "--sample_steps", "--max-train-steps", "--max_train_steps",
     "--train-steps", "--train_steps"): ("--steps",),
    ("--scheduler", "--sampler-name", "--sampler_name"): ("--sampler",),
    ("--output", "--outdir", "--out-dir", "--output-dir", "--output_dir", "--outpath"):
        ("--out", "--output-dir"),
    ("--resume-from-checkpoint", "--resume_from_checkpoint"): ("--resume",),
    ("--mixed-precision", "--mixed_precision"): ("--precision",),
    ("--learning-rate", "--learning_rate", "--lr"): ("--set train.lr=...",),
    ("--train-batch-size", "--train_batch_size", "--batch_size"):
        ("--batch-size", "--set train.batch_size=..."),
    ("--seed",): ("--set train.seed=...",),
    ("--resolution",): ("--set data.resolution=...",),
    ("--train-data-dir", "--train_data_dir", "--dataset", "--dataset-name",
     "--dataset_name", "--data-dir", "--data_dir"): ("--set data.source=...",),
}
_LOOKUP = {name: targets for names, targets in OTHER_NAMES.items() for name in names}


def _argument(command: Any, name: str) -> Any:
    """``command``'s positional argument called ``name`` (None if it has none)."""
    return next((p for p in getattr(command, "params", ())
                 if p.name == name and not p.opts[0].startswith("-")), None)


def _has_option(command: Any, target: str) -> bool:
    """Whether ``command`` takes the option ``target`` starts with (``--set KEY=...``:
    any command with ``--set``)."""
    option = target.split()[0]
    return any(option in (*p.opts, *getattr(p, "secondary_opts", ()))
               for p in getattr(command, "params", ()))


def glidectl_name(option: str, command: Any, path: str) -> str | None:
    """What ``command`` (called as ``path``) takes where another tool takes ``option``, as
    a clause for the "No such option" line (None: no such meaning, or nothing for it). An
    option named as one of the command's arguments (``--model`` for ``fit-steps MODEL``)
    is told that it is the argument."""
    bare = option.lstrip("-").replace("-", "_")
    for target in (*_LOOKUP.get(option, ()), bare):
        if not target.startswith("-") and (argument := _argument(command, target)):
            if option in PROMPT_FILE_NAMES and getattr(argument, "nargs", 1) == -1:
                # sample's texts, not eval's one file: `sample prompts.txt` draws "prompts.txt"
                return (f"{path}'s {argument.name.upper()} are prompt texts, not a file; "
                        "glidectl eval PROMPTS.txt samples each line of a prompts file")
            return f"{argument.name.upper()} is {path}'s argument, not an option"
        if target.startswith("-") and _has_option(command, target):
            return f"{path} takes it as {target}"
    return None
