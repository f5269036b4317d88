"""The corpus of bad inputs that tests/test_bad_input.py runs: every command that reads user input.

A case is (id, argv, files, expected): argv is a command line whose {placeholders} name fixtures ({model},
{other_model}, {prompts}, {qa}, {pairs}, {feedback} (KTO rows), {rl}, {sde}, {d} = the case's own folder, adapter variants such as
{trunc}); files are written into {d} first (str or bytes); every expected substring must be in the one error
line. Each case must exit 2 with `llm-tuning CMD: error: ...` and no traceback.
"""

from __future__ import annotations

# A table, one case per line:
# fmt: off

Case = tuple[str, str, dict[str, str | bytes], list[str]]

# ---- corrupted and foreign adapters, in every command that loads one -------------------------

ADAPTER_COMMANDS = {
    "predict": "predict --model {model} --adapter {A} --data_path {prompts} --max_new_tokens 2 --output_file {d}/p.jsonl",
    "chat": "chat --model {model} --adapter {A} --message hi --max_new_tokens 2",
    "compare": "compare --model {model} --adapter {A} --data_path {prompts} --max_new_tokens 2 --output_file {d}/c.jsonl",
    "mix": "mix --model {model} --adapter {A}:0.5 --output {d}/mixed",
    "merge": "merge --model {model} --adapter {A} --output {d}/merged",
    "serve": "serve --model {model} --adapter {A}",
    "train": "train --model {model} --data {qa} --prompt_key q --target_key a --previous_lora_weights {A} " "--max_steps 1 --output_dir {d}/w --report_to none",
    "dpo": "dpo --model {model} --data {pairs} --sft_adapter {A} --max_steps 1 --output_dir {d}/w --report_to none",
    "rm": "rm --model {model} --data {pairs} --sft_adapter {A} --max_steps 1 --output_dir {d}/w --report_to none",
    "orpo": "orpo --model {model} --data {pairs} --sft_adapter {A} --max_steps 1 --output_dir {d}/w --report_to none",
    "kto": "kto --model {model} --data {feedback} --sft_adapter {A} --max_steps 1 --output_dir {d}/w --report_to none",
    "rm-score": "rm score --model {model} --adapter {A} --data {pairs} --output_file {d}/s.jsonl",
    "grpo": "grpo --model {model} --data {rl} --sft_adapter {A} --reward exact_match --max_steps 1 --batch_size 2 " "--num_generations 2 --max_new_tokens 2 --output_dir {d}/w --report_to none",
    "ppo": "ppo --model {model} --data {rl} --sft_adapter {A} --reward exact_match --max_steps 1 --batch_size 2 " "--mini_batch_size 2 --max_new_tokens 2 --output_dir {d}/w --report_to none",
    "ppo-reward-model": "ppo --model {model} --data {rl} --reward_model {A} --max_steps 1 --batch_size 2 " "--mini_batch_size 2 --max_new_tokens 2 --output_dir {d}/w --report_to none",
}

# variant -> what the one error line must say (the variant's folder name is asserted too)
ADAPTER_VARIANTS = {
    "missing_adapter": ["no such folder"],
    "file_adapter": ["is a file"],
    "no_config_adapter": ["no adapter_config.json"],
    "config_not_json_adapter": ["adapter_config.json: is not valid JSON"],
    "config_list_adapter": ["adapter_config.json: must be a JSON object"],
    "no_weights_adapter": ["no adapter_model.safetensors"],
    "empty_weights_adapter": ["adapter_model.safetensors: is empty"],
    "trunc_adapter": ["adapter_model.safetensors: is not a readable safetensors file", "truncated"],
    "garbage_adapter": ["adapter_model.safetensors: is not a readable safetensors file"],
    "rank_mismatch_adapter": ["field 'r'", "says rank 8, but the weights have rank [4]"],
    "other_size_adapter": ["does not fit --model", "inputs"],
    "other_base_adapter": ["different model (same layer shapes, different weights)", "pass --model"],
}


def adapter_cases() -> list[Case]:
    cases = []
    for command, argv in ADAPTER_COMMANDS.items():
        for variant, expected in ADAPTER_VARIANTS.items():
            # rm score needs a reward model to get as far as the shape and base checks
            fixture = f"rm_{variant}" if command == "rm-score" and variant.startswith("other_") else variant
            cases.append(
                (f"{command}-{variant}", argv.replace("{A}", "{" + fixture + "}"), {}, [variant, *expected])
            )
    return cases


# ---- flags: out of range, unknown, wrong type -------------------------------------------------

TRAIN = "train --model {model} --data {qa} --prompt_key q --target_key a --output_dir {d}/w --report_to none --max_steps 1 "
PREDICT = "predict --model {model} --data_path {prompts} --max_new_tokens 2 --output_file {d}/p.jsonl "
CHAT = "chat --model {model} --message hi --max_new_tokens 2 "
COMPARE = "compare --model {model} --adapter {good} --data_path {prompts} --max_new_tokens 2 --output_file {d}/c.jsonl "
TOKENIZE = "tokenize --model {model} --output_dir {d}/tok "
DPO = "dpo --model {model} --data {pairs} --max_steps 1 --output_dir {d}/w --report_to none "
RM = "rm --model {model} --data {pairs} --max_steps 1 --output_dir {d}/w --report_to none "
ORPO = "orpo --model {model} --data {pairs} --max_steps 1 --output_dir {d}/w --report_to none "
SIMPO = "simpo --model {model} --data {pairs} --max_steps 1 --output_dir {d}/w --report_to none "
CPO = "cpo --model {model} --data {pairs} --max_steps 1 --output_dir {d}/w --report_to none "
KTO = "kto --model {model} --data {feedback} --max_steps 1 --output_dir {d}/w --report_to none "
GRPO = ("grpo --model {model} --data {rl} --max_steps 1 --batch_size 2 --num_generations 2 --max_new_tokens 2 "
        "--output_dir {d}/w --report_to none ")  # fmt: skip
PPO = ("ppo --model {model} --data {rl} --max_steps 1 --batch_size 2 --mini_batch_size 2 --max_new_tokens 2 "
       "--output_dir {d}/w --report_to none --reward exact_match ")  # fmt: skip
MIX = "mix --model {model} --adapter {good}:0.5 --output {d}/mixed "
MERGE = "merge --model {model} --adapter {good} --output {d}/merged "
SERVE = "serve --model {model} --adapter good={good} "

FLAG_CASES: list[Case] = [
    # train: every number the Trainer takes, and the choices
    ("train-lr-negative", TRAIN + "--learning_rate -1", {}, ["--learning_rate must be > 0", "-1"]),
    ("train-lr-nan", TRAIN + "--learning_rate nan", {}, ["--learning_rate must be > 0", "nan"]),
    ("train-lr-text", TRAIN + "--learning_rate fast", {}, ["--learning_rate", "invalid float value"]),
    ("train-batch-0", TRAIN + "--per_device_train_batch_size 0", {}, ["--per_device_train_batch_size must be > 0"]),
    ("train-eval-batch-0", TRAIN + "--per_device_eval_batch_size 0", {}, ["--per_device_eval_batch_size must be > 0"]),
    ("train-accumulation-0", TRAIN + "--gradient_accumulation_steps 0", {}, ["--gradient_accumulation_steps must be > 0"]),
    ("train-scheduler", TRAIN + "--lr_scheduler_type cosine_annealing", {}, ["--lr_scheduler_type 'cosine_annealing' is not valid", "cosine"]),
    ("train-max-steps-0", TRAIN + "--max_steps 0", {}, ["--max_steps must be >= 1, or -1"]),
    ("train-max-steps-neg", TRAIN + "--max_steps -5", {}, ["--max_steps must be >= 1, or -1"]),
    ("train-epochs-0", TRAIN + "--max_steps -1 --num_train_epochs 0", {}, ["--num_train_epochs must be > 0"]),
    ("train-alpha-0", TRAIN + "--lora_alpha 0", {}, ["--lora_alpha must be > 0", "do nothing"]),
    ("train-alpha-neg", TRAIN + "--lora_alpha -16", {}, ["--lora_alpha must be > 0"]),
    ("train-rank-0", TRAIN + "--lora_rank 0", {}, ["--lora_rank must be > 0"]),
    ("train-dropout-1", TRAIN + "--lora_dropout 1", {}, ["--lora_dropout must be in [0, 1)"]),
    ("train-eval-split-1.5", TRAIN + "--eval_split 1.5", {}, ["--eval_split must be in [0, 1)"]),
    ("train-save-steps-0", TRAIN + "--save_steps 0", {}, ["--save_steps must be > 0"]),
    ("train-logging-steps-0", TRAIN + "--logging_steps 0", {}, ["--logging_steps must be > 0"]),
    ("train-eval-steps-0", TRAIN + "--eval_steps 0", {}, ["--eval_steps must be > 0"]),
    ("train-save-limit-0", TRAIN + "--save_total_limit 0", {}, ["--save_total_limit must be >= 1"]),
    ("train-warmup-neg", TRAIN + "--warmup_steps -1", {}, ["--warmup_steps must be >= 0"]),
    ("train-grad-norm-negative", TRAIN + "--max_grad_norm -1", {}, ["--max_grad_norm must be >= 0"]),
    ("train-weight-decay-neg", TRAIN + "--weight_decay -0.1", {}, ["--weight_decay must be >= 0"]),
    ("train-seq-len-0", TRAIN + "--max_seq_length 0", {}, ["--max_seq_length must be > 0"]),
    ("train-template", TRAIN + "--template alpaca", {}, ["--template 'alpaca' is not valid", "chat"]),
    ("train-dtype", TRAIN + "--dtype float8", {}, ["--dtype 'float8' is not valid"]),
    ("train-device-banana", TRAIN + "--device banana", {}, ["--device 'banana' is not a device"]),
    ("train-device-cuda-99", TRAIN + "--device cuda:99", {}, ["--device cuda:99"]),
    ("train-mix-method", TRAIN + "--mix_method blend", {}, ["--mix_method 'blend' is not valid"]),
    ("train-fp16-bf16", TRAIN + "--fp16 --bf16", {}, ["choose one of --fp16 and --bf16"]),
    ("train-bool-text", TRAIN + "--packing maybe", {}, ["--packing", "expected true or false"]),
    ("train-unknown-flag", TRAIN + "--lerning_rate 1e-4", {}, ["unrecognized arguments: --lerning_rate"]),
    ("train-no-data", "train --model {model} --output_dir {d}/w", {}, ["give the training data"]),
    ("train-both-data", TRAIN + "--tokenized_dataset x", {}, ["give either --tokenized_dataset or --data"]),
    ("train-threads-neg", TRAIN + "--torch_threads -1", {}, ["--torch_threads must be >= 0"]),
    ("train-workers-neg", TRAIN + "--dataloader_num_workers -1", {}, ["--dataloader_num_workers must be >= 0"]),
    ("train-tokenized-missing", "train --model {model} --tokenized_dataset {d}/nope --output_dir {d}/w", {}, ["--tokenized_dataset", "nope", "no tokenized folder"]),
    ("train-target-modules", TRAIN + "--target_modules query_key_value", {}, ["--target_modules query_key_value not found", "q_proj"]),
    ("train-target-modules-empty", TRAIN + "--target_modules ,", {}, ["--target_modules is empty"]),
    ("train-report-to", TRAIN + "--report_to carrier_pigeon", {}, ["--report_to 'carrier_pigeon' is not valid", "tensorboard"]),
    ("train-model-missing", "train --model {d}/no_model --data {qa} --output_dir {d}/w", {}, ["no_model", "is not a model folder"]),
    ("train-model-no-config", "train --model {d}/empty_model --data {qa} --output_dir {d}/w", {"empty_model/README": "x"}, ["empty_model has no config.json"]),
    ("train-model-empty", "train --model '' --data {qa}", {}, ["--model is empty"]),
    # predict / chat / compare: generation numbers and adapter names
    ("predict-max-new-tokens-neg", PREDICT + "--max_new_tokens -1", {}, ["--max_new_tokens must be > 0"]),
    ("predict-max-new-tokens-0", PREDICT + "--max_new_tokens 0", {}, ["--max_new_tokens must be > 0"]),
    ("predict-temperature-neg", PREDICT + "--temperature -1", {}, ["--temperature must be > 0"]),
    ("predict-temperature-0", PREDICT + "--do_sample --temperature 0", {}, ["--temperature must be > 0"]),
    ("predict-top-p-0", PREDICT + "--top_p 0", {}, ["--top_p must be in (0, 1]"]),
    ("predict-top-p-big", PREDICT + "--top_p 1.5", {}, ["--top_p must be in (0, 1]"]),
    ("predict-top-k-neg", PREDICT + "--top_k -1", {}, ["--top_k must be >= 0"]),
    ("predict-repetition-0", PREDICT + "--repetition_penalty 0", {}, ["--repetition_penalty must be > 0"]),
    ("predict-batch-0", PREDICT + "--batch_size 0", {}, ["--batch_size must be > 0"]),
    ("predict-limit-0", PREDICT + "--limit 0", {}, ["--limit must be > 0"]),
    ("predict-mix-density", PREDICT + "--adapter {good} --mix_density 2", {}, ["--mix_density must be in (0, 1]"]),
    ("predict-mix-method", PREDICT + "--adapter {good} --mix_method blend", {}, ["--mix_method 'blend' is not valid"]),
    ("predict-template", PREDICT + "--template raw", {}, ["--template 'raw' is not valid"]),
    ("predict-no-data", "predict --model {model}", {}, ["--data_path is required"]),
    ("predict-device", PREDICT + "--device gpu", {}, ["--device 'gpu' is not a device"]),
    ("predict-name-lora", PREDICT + "--adapter lora_x={good}", {}, ["'lora_x' contains 'lora_'"]),
    ("predict-name-dot", PREDICT + "--adapter my.name={good}", {}, ["'my.name' must be letters, digits"]),
    ("predict-name-base", PREDICT + "--adapter base={good}", {}, ["'base' means the model without adapters"]),
    ("predict-name-twice", PREDICT + "--adapter x={good} --adapter x={good}", {}, ["adapter names must differ"]),
    ("chat-max-new-tokens-neg", CHAT + "--max_new_tokens -5", {}, ["--max_new_tokens must be > 0"]),
    ("chat-temperature-neg", CHAT + "--temperature -0.5", {}, ["--temperature must be > 0"]),
    ("chat-history-neg", CHAT + "--history_turns -1", {}, ["--history_turns must be >= 0"]),
    ("chat-top-p", CHAT + "--top_p 2", {}, ["--top_p must be in (0, 1]"]),
    ("compare-no-adapter", "compare --model {model} --data_path {prompts}", {}, ["give at least one --adapter"]),
    ("compare-width-0", COMPARE + "--width 0", {}, ["--width must be > 0"]),
    ("compare-max-new-tokens", COMPARE + "--max_new_tokens -1", {}, ["--max_new_tokens must be > 0"]),
    ("compare-name-mix", "compare --model {model} --adapter mix={good}:0.5 --adapter b={good} --data_path {prompts}", {}, ["named 'mix'"]),
    # per-request mixes (--mix, --adapter_key): the server's request syntax, checked in one place (models/row_mix.py)
    ("predict-mix-no-adapter", PREDICT + "--mix a:0.5+b:0.5", {}, ["--mix a:0.5+b:0.5", "give the adapters it mixes with --adapter"]),
    ("predict-mix-twice", PREDICT + "--adapter g={good} --mix g:0.5 --mix g:0.2", {}, ["--mix is given 2 times", "--adapter_key"]),
    ("predict-mix-unknown", PREDICT + "--adapter g={good} --mix g:0.5+nope:0.5", {}, ["--mix 'g:0.5+nope:0.5'", "no adapter named 'nope'", "loaded adapters: g"]),
    ("predict-mix-weight", PREDICT + "--adapter g={good} --mix g:half", {}, ["--mix 'g:half'", "the weight 'half' of 'g' is not a number"]),
    ("predict-mix-inf", PREDICT + "--adapter g={good} --mix g:inf", {}, ["--mix 'g:inf'", "must be a finite number"]),
    ("predict-mix-comma", PREDICT + "--adapter g={good} --mix g:0.5,g:0.5", {}, ["--mix 'g:0.5,g:0.5'", "join adapters with '+'"]),
    ("predict-mix-twice-named", PREDICT + "--adapter g={good} --mix g:0.5+g:0.5", {}, ["'g' is named twice"]),
    ("predict-mix-method", PREDICT + "--adapter g={good} --mix g:0.5@ties", {}, ["--mix 'g:0.5@ties'", "'ties' cannot be computed per request", "--mix_method ties"]),
    ("predict-mix-weighted-adapter", PREDICT + "--adapter g={good}:0.5 --mix g:1", {}, ["--adapter g:0.5 has a weight and --mix is given"]),
    ("predict-mix-bad-name", PREDICT + "--adapter g={good} --mix 'my mix=g:1'", {}, ["the name 'my mix' must be letters"]),
    ("predict-row-adapter-unknown", PREDICT.replace("{prompts}", "{d}/r.jsonl") + "--adapter g={good} --adapter_key model", {"r.jsonl": '{"prompt": "a", "model": "g"}\n{"prompt": "b", "model": "nope"}\n'}, ["r.jsonl, row 2, field 'model': no adapter named 'nope'", "loaded: base, g"]),
    ("predict-row-mix-bad", PREDICT.replace("{prompts}", "{d}/r.jsonl") + "--adapter g={good} --adapter_key model", {"r.jsonl": '{"prompt": "a", "model": "g:0.5+g:0.5"}\n'}, ["r.jsonl, row 1, field 'model': mix 'g:0.5+g:0.5': 'g' is named twice"]),
    ("predict-row-mix-method", PREDICT.replace("{prompts}", "{d}/r.jsonl") + "--adapter g={good} --adapter_key model", {"r.jsonl": '{"prompt": "a", "model": "g:1@svd"}\n'}, ["row 1, field 'model'", "'svd' cannot be computed per request"]),
    ("predict-row-adapter-number", PREDICT.replace("{prompts}", "{d}/r.jsonl") + "--adapter g={good} --adapter_key model", {"r.jsonl": '{"prompt": "a", "model": 3}\n'}, ["row 1, field 'model': must be text, got int"]),
    ("predict-row-adapter-missing", PREDICT.replace("{prompts}", "{d}/r.jsonl") + "--adapter g={good} --adapter h={good} --adapter_key model", {"r.jsonl": '{"prompt": "a", "model": "g"}\n{"prompt": "b"}\n'}, ["row 2, field 'model': is missing", "every row names base, an adapter (g, h)"]),
    ("serve-backend", SERVE + "--backend tgi", {}, ["--backend 'tgi' is not valid", "llm-tuning, vllm"]),
    ("serve-vllm-args-alone", SERVE + "--vllm_args '--max-model-len 512'", {}, ["--vllm_args is for --backend vllm"]),
    ("serve-vllm-mix", SERVE + "--backend vllm --mix both=good:0.5", {}, ["--backend vllm", "vLLM cannot mix adapters"]),
    ("serve-vllm-weighted", "serve --model {model} --adapter good={good}:0.5 --backend vllm", {}, ["--adapter good:0.5", "vLLM cannot compute"]),
    ("serve-vllm-system-prompt", SERVE + "--backend vllm --system_prompt hi", {}, ["--backend vllm cannot honour --system_prompt"]),
    ("compare-mix-unknown", COMPARE + "--mix good_adapter:0.5+x:1", {}, ["--mix 'good_adapter:0.5+x:1'", "no adapter named 'x'"]),
    ("compare-mix-name-taken", COMPARE + "--mix base=good_adapter:0.5", {}, ["--mix base", "already taken"]),
    ("chat-mix-unknown", CHAT + "--adapter g={good} --mix g:1+x:1", {}, ["--mix 'g:1+x:1'", "no adapter named 'x'"]),
    ("eval-mix-method", "eval --model {model} --data {qa} --prompt_key q --target_key a --adapter g={good} --mix g:1@linear --output_dir {d}/e", {}, ["--mix 'g:1@linear'", "'linear' cannot be computed per request"]),
    # tokenize
    ("tokenize-no-input", "tokenize --model {model}", {}, ["--input_file", "no data file given"]),
    ("tokenize-num-proc", TOKENIZE + "--input_file {qa} --num_proc -1", {}, ["--num_proc must be >= 0"]),
    ("tokenize-batch-rows", TOKENIZE + "--input_file {qa} --batch_rows 0", {}, ["--batch_rows >= 1"]),
    ("tokenize-seq-len", TOKENIZE + "--input_file {qa} --max_seq_length -5", {}, ["--max_seq_length must be > 0"]),
    ("tokenize-model", "tokenize --model no-such-model-xyz --input_file {qa}", {}, ["no-such-model-xyz", "smollm2-135m-instruct"]),
    # rm / dpo
    ("dpo-beta-0", DPO + "--beta 0", {}, ["--beta must be > 0"]),
    ("dpo-loss-type", DPO + "--loss_type kto", {}, ["--loss_type 'kto' is not valid"]),
    ("dpo-label-smoothing", DPO + "--label_smoothing 0.9", {}, ["--label_smoothing must be in [0, 0.5]"]),
    ("dpo-lr-negative", DPO + "--learning_rate -1", {}, ["--learning_rate must be > 0"]),
    ("dpo-accumulation-0", DPO + "--gradient_accumulation_steps 0", {}, ["--gradient_accumulation_steps must be > 0"]),
    ("dpo-scheduler", DPO + "--lr_scheduler_type triangle", {}, ["--lr_scheduler_type 'triangle' is not valid"]),
    ("dpo-alpha-0", DPO + "--lora_alpha 0", {}, ["--lora_alpha must be > 0"]),
    ("dpo-max-steps-0", DPO + "--max_steps 0", {}, ["--max_steps must be >= 1"]),
    ("dpo-no-data", "dpo --model {model}", {}, ["give the preference pairs"]),
    ("dpo-eval-split", DPO + "--eval_split 1", {}, ["--eval_split must be in [0, 1)"]),
    ("dpo-subset-0", DPO + "--train_subset 0", {}, ["--train_subset must be a number of pairs >= 1"]),
    # orpo / simpo / cpo / kto (the shared preference runner)
    ("orpo-beta-0", ORPO + "--beta 0", {}, ["--beta must be > 0"]),
    ("orpo-no-data", "orpo --model {model}", {}, ["give the preference pairs"]),
    ("orpo-lr-negative", ORPO + "--learning_rate -1", {}, ["--learning_rate must be > 0"]),
    ("orpo-extra-args-unknown", ORPO + "{d}/r.yaml", {"r.yaml": "extra_args: {warp_speed: 9}\n"}, ["extra_args: 'warp_speed' are not TRL ORPOConfig fields"]),
    ("simpo-loss-type", SIMPO + "--loss_type dpo", {}, ["--loss_type 'dpo' is not valid", "simpo"]),
    ("simpo-gamma-negative", SIMPO + "--simpo_gamma -1", {}, ["--simpo_gamma must be >= 0"]),
    ("cpo-alpha-negative", CPO + "--cpo_alpha -0.5", {}, ["--cpo_alpha must be >= 0"]),
    ("cpo-label-smoothing", CPO + "--label_smoothing 0.9", {}, ["--label_smoothing must be in [0, 0.5]"]),
    ("kto-no-data", "kto --model {model}", {}, ["give the feedback rows", "completion and label"]),
    ("kto-batch-1", KTO + "--per_device_train_batch_size 1", {}, ["--per_device_train_batch_size must be >= 2 for KTO"]),
    ("kto-loss-type", KTO + "--loss_type sigmoid", {}, ["--loss_type 'sigmoid' is not valid"]),
    ("kto-weight-0", KTO + "--desirable_weight 0", {}, ["--desirable_weight must be > 0"]),
    ("rm-batch-0", RM + "--per_device_train_batch_size 0", {}, ["--per_device_train_batch_size must be > 0"]),
    ("rm-max-length-0", RM + "--max_length 0", {}, ["--max_length must be > 0"]),
    ("rm-device-cuda-99", RM + "--device cuda:99", {}, ["--device cuda:99"]),
    ("rm-score-sft-adapter", "rm score --model {model} --adapter {good} --data {pairs}", {}, ["--adapter", "good_adapter", "not a reward model"]),
    ("rm-score-no-adapter", "rm score --model {model} --data {pairs}", {}, ["give --adapter"]),
    # grpo / ppo
    ("grpo-generations-1", GRPO + "--reward exact_match --num_generations 1", {}, ["--num_generations must be >= 2"]),
    ("grpo-no-reward", GRPO, {}, ["give a reward"]),
    ("rloo-generations-1", GRPO.replace("grpo", "rloo", 1) + "--reward exact_match --num_generations 1", {}, ["--num_generations must be >= 2"]),
    ("rloo-no-reward", GRPO.replace("grpo", "rloo", 1), {}, ["give a reward"]),
    ("rloo-beta-negative", GRPO.replace("grpo", "rloo", 1) + "--reward exact_match --beta -1", {}, ["--beta must be >= 0"]),
    ("grpo-reward-unknown", GRPO + "--reward kindness", {}, ["--reward 'kindness' is not a built-in reward"]),
    ("grpo-reward-no-file", GRPO + "--reward {d}/nope.py:fn", {}, ["nope.py does not exist"]),
    ("grpo-reward-syntax", GRPO + "--reward {d}/bad.py:fn", {"bad.py": "def fn(:\n"}, ["bad.py", "raised SyntaxError"]),
    ("grpo-reward-import-error", GRPO + "--reward {d}/imp.py:fn", {"imp.py": "import no_such_module_xyz\n"}, ["imp.py", "ModuleNotFoundError"]),
    ("grpo-reward-no-function", GRPO + "--reward {d}/ok.py:missing", {"ok.py": "def fn(**k):\n    return []\n"}, ["has no function 'missing'"]),
    ("grpo-reward-not-python", GRPO + "--reward {d}/notes.txt:fn", {"notes.txt": "hello"}, ["is not a Python file"]),
    ("grpo-reward-weights", GRPO + "--reward exact_match --reward_weights 1 --reward_weights 2", {}, ["--reward_weights gives 2 weights for 1"]),
    ("grpo-temperature-0", GRPO + "--reward exact_match --temperature 0", {}, ["--temperature must be > 0"]),
    ("grpo-top-p-0", GRPO + "--reward exact_match --top_p 0", {}, ["--top_p must be in (0, 1]"]),
    ("grpo-epsilon-0", GRPO + "--reward exact_match --epsilon 0", {}, ["--epsilon must be > 0"]),
    ("grpo-beta-neg", GRPO + "--reward exact_match --beta -1", {}, ["--beta must be >= 0"]),
    ("grpo-lr-neg", GRPO + "--reward exact_match --learning_rate -1", {}, ["--learning_rate must be > 0"]),
    ("grpo-alpha-0", GRPO + "--reward exact_match --lora_alpha 0", {}, ["--lora_alpha must be > 0"]),
    ("grpo-max-new-tokens-neg", GRPO + "--reward exact_match --max_new_tokens -1", {}, ["--max_new_tokens must be > 0"]),
    ("ppo-kl-penalty", PPO + "--kl_penalty k9", {}, ["--kl_penalty 'k9' is not valid"]),
    ("ppo-epochs-0", PPO + "--ppo_epochs 0", {}, ["--ppo_epochs must be > 0"]),
    ("ppo-cliprange-0", PPO + "--cliprange 0", {}, ["--cliprange must be > 0"]),
    ("ppo-reference", PPO + "--reference frozen", {}, ["--reference", "invalid choice: 'frozen'"]),
    ("ppo-max-steps-0", PPO + "--max_steps 0", {}, ["--max_steps must be > 0"]),
    ("ppo-batch-0", PPO + "--batch_size 0", {}, ["--batch_size must be > 0"]),
    ("ppo-report-to", PPO + "--report_to wandb", {}, ["--report_to 'wandb'"]),
    ("ppo-reward-model-no-head", PPO + "--reward_model {good}", {}, ["--reward_model", "no scalar score head"]),
    # mix / merge
    ("mix-no-adapter", "mix --model {model} --output {d}/m", {}, ["give at least one --adapter"]),
    ("mix-density", MIX + "--method ties --density 2", {}, ["--density must be in (0, 1]"]),
    ("mix-method", MIX + "--method blend", {}, ["--method 'blend' is not valid"]),
    ("mix-no-output", "mix --model {model} --adapter {good}", {}, ["--output is required"]),
    ("mix-output-exists", MIX.replace("{d}/mixed", "{d}/full"), {"full/keep.txt": "mine"}, ["full exists and is not empty", "--overwrite"]),
    ("merge-dtype", MERGE + "--dtype int4", {}, ["--dtype 'int4' is not valid"]),
    ("merge-name-lora", "merge --model {model} --adapter my_lora_x={good} --output {d}/m", {}, ["contains 'lora_'"]),
    # serve (flags only: uvicorn.run is replaced by a failure)
    ("serve-port-0", SERVE + "--port 0", {}, ["--port must be a TCP port in 1..65535"]),
    ("serve-port-big", SERVE + "--port 70000", {}, ["--port must be a TCP port in 1..65535"]),
    ("serve-limit-0", SERVE + "--max_tokens_limit 0", {}, ["--max_tokens_limit must be > 0"]),
    ("serve-request-bytes-0", SERVE + "--max_request_bytes 0", {}, ["--max_request_bytes must be > 0"]),
    ("serve-mix-method", SERVE + "--mix_method blend", {}, ["--mix_method 'blend' is not valid"]),
    ("serve-mix-density", SERVE + "--mix_density 0", {}, ["--mix_density must be in (0, 1]"]),
    ("serve-template", SERVE + "--template raw", {}, ["--template 'raw' is not valid"]),
    ("serve-host-empty", SERVE + "--host ''", {}, ["--host is empty"]),
    ("serve-mix-spec", SERVE + "--mix nonsense", {}, ["--mix 'nonsense': write it as NAME=ADAPTER:WEIGHT"]),
    ("serve-mix-ghost", SERVE + "--mix both=ghost:0.5", {}, ["no adapter named 'ghost'"]),
    ("serve-mix-weight", SERVE + "--mix both=good:heavy", {}, ["weight 'heavy' of 'good' is not a number"]),
    ("serve-mix-weight-nan", SERVE + "--mix both=good:nan", {}, ["must be a finite number"]),
    ("serve-device", SERVE + "--device cuda:99", {}, ["--device cuda:99"]),
    ("serve-port-text", SERVE + "--port http", {}, ["--port", "invalid int value"]),
    # outputs of the wrong kind: a folder where a file goes, a file where a folder goes
    ("predict-output-is-folder", PREDICT.replace("{d}/p.jsonl", "{d}/out"), {"out/x": "1"}, ["--output_file", "out is a folder"]),
    ("compare-output-is-folder", COMPARE.replace("{d}/c.jsonl", "{d}/out"), {"out/x": "1"}, ["--output_file", "out is a folder"]),
    ("train-output-is-file", TRAIN.replace("{d}/w", "{d}/w.txt"), {"w.txt": "mine"}, ["--output_dir", "w.txt is a file"]),
    ("dpo-output-is-file", DPO.replace("{d}/w", "{d}/w.txt"), {"w.txt": "mine"}, ["--output_dir", "w.txt is a file"]),
    ("grpo-output-is-file", GRPO.replace("{d}/w", "{d}/w.txt") + "--reward exact_match", {"w.txt": "mine"}, ["--output_dir", "w.txt is a file"]),
    ("mix-output-is-file", MIX.replace("{d}/mixed", "{d}/m.txt"), {"m.txt": "mine"}, ["--output", "m.txt is a file"]),
    ("merge-output-is-file", MERGE.replace("{d}/merged", "{d}/m.txt"), {"m.txt": "mine"}, ["--output", "m.txt is a file"]),
    ("tokenize-output-is-file", "tokenize --model {model} --input_file {qa} --output_dir {d}/t.txt", {"t.txt": "x"}, ["--output_dir", "t.txt is a file"]),
    ("rm-score-output-is-folder", "rm score --model {model} --adapter {good} --data {pairs} --output_file {d}/o", {"o/x": "1"}, ["--output_file", "is a folder"]),
    ("sde-render-output-is-folder", "sde render --input {sde} --output {d}/o", {"o/x": "1"}, ["--output", "is a folder"]),
    ("sde-run-output-is-file", "sde run --data {sde} --output_dir {d}/g.txt", {"g.txt": "x"}, ["--output_dir", "g.txt is a file"]),
    # --device cuda on a machine without a GPU (skipped where one is present)
    ("train-device-cuda-no-gpu", TRAIN + "--device cuda", {}, ["--device cuda: no CUDA GPU is visible"]),
    ("predict-device-cuda-no-gpu", PREDICT + "--device cuda", {}, ["--device cuda: no CUDA GPU is visible"]),
    ("dpo-device-cuda-no-gpu", DPO + "--device cuda", {}, ["--device cuda: no CUDA GPU is visible"]),
    ("serve-device-cuda-no-gpu", SERVE + "--device cuda", {}, ["--device cuda: no CUDA GPU is visible"]),
    # the command line itself
    ("sde-unknown-subcommand", "sde draw", {}, ["unknown subcommand 'draw'", "render, score, run"]),
    ("sde-bare", "sde", {}, ["a subcommand is needed", "render, score, run"]),
]

# ---- data files -------------------------------------------------------------------------------

PAIR = '{"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}\n'
NOT_UTF8 = b'{"prompt": "caf\xe9", "target": "x"}\n'
BAD_FILES: dict[str, tuple[str, str | bytes, list[str]]] = {
    # name: (file name, content, expected) -- used by every command that reads prompt or pair files
    "not-utf8": ("bad.jsonl", NOT_UTF8, ["bad.jsonl, row 1: is not valid UTF-8"]),
    "broken-json": ("bad.jsonl", '\n{"prompt": "a",\n', ["bad.jsonl, row 2: broken JSON"]),
    "broken-array": ("bad.json", '[{"prompt": "a", "target": "b"},', ["bad.json, row 1: broken JSON array"]),
    "array-of-strings": ("bad.json", '["a", "b"]', ["bad.json, row 1: is a str, not an object"]),
    "line-is-list": ("bad.jsonl", "[1, 2]\n", ["bad.jsonl, row 1: is a list, not an object"]),
    "unknown-suffix": ("bad.txt", "prompt,target\n", ["bad.txt: unknown file type '.txt'"]),
    "csv-long-row": ("bad.csv", "prompt,target,chosen,rejected\na,b,c,d,e\n", ["bad.csv, row 1: has 5 values but the header has 4 columns"]),
    "csv-short-row": ("bad.csv", "prompt,target,chosen,rejected\na,b\n", ["bad.csv, row 1", "has 2 values but the header has 4 columns"]),
    "empty": ("empty.jsonl", "", ["empty.jsonl: has no rows"]),
    "blank-lines": ("blank.jsonl", "\n\n  \n", ["blank.jsonl: has no rows"]),
    "missing": ("ghost.jsonl", None, ["ghost.jsonl: file does not exist"]),
    "folder": ("dir.jsonl", "FOLDER", ["dir.jsonl: is a folder"]),
}
READERS = {
    "tokenize": TOKENIZE + "--input_file {F}",
    "train": "train --model {model} --data {F} --output_dir {d}/w --report_to none --max_steps 1",
    "predict": "predict --model {model} --data_path {F} --output_file {d}/p.jsonl --max_new_tokens 2",
    "compare": "compare --model {model} --adapter {good} --data_path {F} --output_file {d}/c.jsonl --max_new_tokens 2",
    "dpo": "dpo --model {model} --data {F} --max_steps 1 --output_dir {d}/w --report_to none",
    "rm": "rm --model {model} --data {F} --max_steps 1 --output_dir {d}/w --report_to none",
    "orpo": "orpo --model {model} --data {F} --max_steps 1 --output_dir {d}/w --report_to none",
    "kto": "kto --model {model} --data {F} --max_steps 1 --output_dir {d}/w --report_to none",
    "rm-score": "rm score --model {model} --adapter {good} --data {F} --output_file {d}/s.jsonl",
    "grpo": GRPO.replace("{rl}", "{F}") + "--reward exact_match",
    "ppo": PPO.replace("{rl}", "{F}"),
}


def file_cases() -> list[Case]:
    cases = []
    for command, argv in READERS.items():
        for name, (file, content, expected) in BAD_FILES.items():
            if name.startswith("csv") and command in ("train", "tokenize", "predict", "compare"):
                content = content.replace(",chosen,rejected", ",c,d").replace(",c,d,e", ",c,d,e")  # type: ignore[union-attr]
            files = {} if content is None else {file: content}
            cases.append((f"{command}-file-{name}", argv.replace("{F}", "{d}/" + file), files, expected))
    return cases


ROW_CASES: list[Case] = [
    # rows with a missing, empty or wrongly typed field
    ("tokenize-csv-missing-column", TOKENIZE + "--input_file {d}/qa.csv --prompt_key q --target_key a", {"qa.csv": "q,answer\nhi,there\n"}, ["qa.csv, row 1, field 'a': is missing", "answer"]),
    ("tokenize-null-prompt", TOKENIZE + "--input_file {d}/r.jsonl", {"r.jsonl": '{"prompt": null, "target": "x"}\n'}, ["r.jsonl, row 1, field 'prompt': must be a string"]),
    ("tokenize-empty-target", TOKENIZE + "--input_file {d}/r.jsonl", {"r.jsonl": '{"prompt": "a", "target": "  "}\n'}, ["r.jsonl, row 1, field 'target': is empty"]),
    ("tokenize-bad-role", TOKENIZE + "--input_file {d}/r.jsonl", {"r.jsonl": '{"messages": [{"role": "bot", "content": "x"}]}\n'}, ["r.jsonl, row 1, field 'messages': turn 0 has role 'bot'"]),
    ("tokenize-prompt-loss-text", TOKENIZE + "--input_file {d}/r.jsonl", {"r.jsonl": '{"prompt": "a", "target": "b", "prompt_loss": "yes"}\n'}, ["field 'prompt_loss': must be true or false"]),
    ("tokenize-all-overlength", TOKENIZE + "--input_file {qa} --prompt_key q --target_key a --max_seq_length 3 --skip_overlength", {}, ["every row is longer than --max_seq_length 3"]),
    ("train-one-row-eval-split", "train --model {model} --data {d}/one.jsonl --eval_split 0.2 --output_dir {d}/w --report_to none --max_steps 1", {"one.jsonl": '{"prompt": "a", "target": "b"}\n'}, ["one.jsonl: has 1 row(s)", "--eval_split 0.2"]),
    ("train-csv-missing-column", "train --model {model} --data {d}/qa.csv --output_dir {d}/w --report_to none", {"qa.csv": "prompt,answer\nhi,there\n"}, ["qa.csv, row 1, field 'target': is missing"]),
    ("predict-null-prompt", PREDICT.replace("{prompts}", "{d}/r.jsonl"), {"r.jsonl": '{"prompt": "a"}\n{"prompt": null}\n'}, ["r.jsonl, row 2, field 'prompt': must be text, got NoneType"]),
    ("predict-list-prompt", PREDICT.replace("{prompts}", "{d}/r.jsonl"), {"r.jsonl": '{"prompt": ["a"]}\n'}, ["r.jsonl, row 1, field 'prompt': must be text"]),
    ("predict-missing-key", PREDICT.replace("{prompts}", "{d}/r.jsonl") + "--prompt_key q", {"r.jsonl": '{"prompt": "a"}\n'}, ["r.jsonl, row 1, field 'q': is missing"]),
    ("compare-null-prompt", COMPARE.replace("{prompts}", "{d}/r.jsonl"), {"r.jsonl": '{"prompt": null}\n'}, ["r.jsonl, row 1, field 'prompt': must be text"]),
    ("dpo-all-too-long", DPO + "--max_length 4", {}, ["every pair is longer than --max_length 4"]),
    ("rm-all-too-long", RM + "--max_length 4", {}, ["every pair is longer than --max_length 4"]),
    ("dpo-csv-missing-column", DPO.replace("{pairs}", "{d}/p.csv"), {"p.csv": "prompt,chosen\na,b\n"}, ["p.csv, row 1, field 'rejected': is missing"]),
    ("dpo-same-reply", DPO.replace("{pairs}", "{d}/p.jsonl"), {"p.jsonl": '{"prompt": "a", "chosen": "x", "rejected": "x"}\n'}, ["p.jsonl, row 1, field 'rejected': is the same text as chosen"]),
    ("dpo-null-chosen", DPO.replace("{pairs}", "{d}/p.jsonl"), {"p.jsonl": '{"prompt": "a", "chosen": null, "rejected": "x"}\n'}, ["p.jsonl, row 1, field 'chosen': is missing"]),
    ("orpo-same-reply", ORPO.replace("{pairs}", "{d}/p.jsonl"), {"p.jsonl": '{"prompt": "a", "chosen": "x", "rejected": "x"}\n'}, ["p.jsonl, row 1, field 'rejected': is the same text as chosen"]),
    ("simpo-all-too-long", SIMPO + "--max_length 4", {}, ["every pair is longer than --max_length 4"]),
    ("cpo-csv-missing-column", CPO.replace("{pairs}", "{d}/p.csv"), {"p.csv": "prompt,chosen\na,b\n"}, ["p.csv, row 1, field 'rejected': is missing"]),
    ("kto-label-not-boolean", KTO.replace("{feedback}", "{d}/f.jsonl"), {"f.jsonl": '{"prompt": "a", "completion": "x", "label": true}\n{"prompt": "a", "completion": "y", "label": "maybe"}\n'}, ["f.jsonl, row 2, field 'label': must be true or false, got 'maybe'"]),
    ("kto-label-number", KTO.replace("{feedback}", "{d}/f.jsonl"), {"f.jsonl": '{"prompt": "a", "completion": "x", "label": 2}\n'}, ["f.jsonl, row 1, field 'label': must be true or false, got 2"]),
    ("kto-label-missing", KTO.replace("{feedback}", "{d}/f.jsonl"), {"f.jsonl": '{"prompt": "a", "completion": "x"}\n'}, ["f.jsonl, row 1, field 'label': is missing"]),
    ("kto-csv-label-word", KTO.replace("{feedback}", "{d}/f.csv"), {"f.csv": "prompt,completion,label\na,x,true\nb,y,good\n"}, ["f.csv, row 2, field 'label': must be true or false, got 'good'"]),
    ("kto-given-pairs", KTO.replace("{feedback}", "{pairs}"), {}, ["pairs.jsonl, row 1, field 'completion': is missing", "dpo, orpo, simpo or cpo"]),
    ("kto-empty-completion", KTO.replace("{feedback}", "{d}/f.jsonl"), {"f.jsonl": '{"prompt": "a", "completion": " ", "label": false}\n'}, ["f.jsonl, row 1, field 'completion': is empty"]),
    ("kto-all-too-long", KTO + "--max_length 4", {}, ["every row is longer than --max_length 4"]),
    ("rm-empty-rejected", RM.replace("{pairs}", "{d}/p.jsonl"), {"p.jsonl": '{"prompt": "a", "chosen": "x", "rejected": ""}\n'}, ["p.jsonl, row 1, field 'rejected': is empty"]),
    ("rm-eval-data-missing", RM + "--eval_data {d}/ghost.jsonl", {}, ["ghost.jsonl: file does not exist"]),
    ("rm-score-no-response", "rm score --model {model} --adapter {good} --data {d}/r.jsonl", {"r.jsonl": '{"prompt": "a"}\n'}, ["r.jsonl, row 1, field 'response': is missing"]),
    ("grpo-no-prompt-field", GRPO.replace("{rl}", "{d}/r.jsonl") + "--reward exact_match", {"r.jsonl": '{"question": "a"}\n'}, ["r.jsonl, row 1, field 'prompt': is missing"]),
    ("ppo-only-assistant", PPO.replace("{rl}", "{d}/r.jsonl"), {"r.jsonl": '{"messages": [{"role": "assistant", "content": "x"}]}\n'}, ["r.jsonl, row 1, field 'messages': has no user turn"]),
]

# ---- SDE --------------------------------------------------------------------------------------

RENDER = "sde render --task masa_d1 --design es_sde --input {d}/{F} --output {d}/out.jsonl"
SDE_BAD_ROWS: dict[str, tuple[str, str | bytes, list[str]]] = {
    "missing": ("ghost.jsonl", None, ["ghost.jsonl: no such file"]),
    "folder": ("dir.jsonl", "FOLDER", ["dir.jsonl: is a folder"]),
    "empty": ("e.jsonl", "", ["e.jsonl: has no rows"]),
    "not-utf8": ("b.jsonl", b'{"text": "caf\xe9"}\n', ["b.jsonl, row 1: is not valid UTF-8"]),
    "broken-json": ("b.jsonl", '{"text": "x"\n', ["b.jsonl:1: not valid JSON"]),
    "broken-array": ("b.json", '[{"text": "x"', ["b.json: not valid JSON"]),
    "not-object": ("b.jsonl", '"just text"\n', ["b.jsonl:1: expected an object"]),
    "no-text": ("b.jsonl", '{"labels": {}}\n', ["b.jsonl:1: field 'text' must be a non-empty string"]),
    "labels-list": ("b.jsonl", '{"text": "x", "labels": ["food"]}\n', ["field 'labels' must be a mapping"]),
    "unknown-slot": ("b.jsonl", '{"text": "x", "labels": {"weather": "positive"}}\n', ["field 'labels' has slot 'weather'"]),
    "bad-label": ("b.jsonl", '{"text": "x", "labels": {"食品评价": "tasty"}}\n', ["'tasty' is not a label of task masa_d1"]),
    "bad-evidence": ("b.jsonl", '{"text": "x", "labels": {}, "evidence": "all"}\n', ["field 'evidence' must map slot -> text"]),
    "unknown-suffix": ("b.csv", "text\nx\n", ["b.csv: unknown file type '.csv'"]),
    "bio-for-sentiment": ("b.bio", "a O\n", ["BIO files hold entity spans"]),
}


def sde_cases() -> list[Case]:
    cases = []
    for name, (file, content, expected) in SDE_BAD_ROWS.items():
        files = {} if content is None else {file: content}
        cases.append((f"sde-render-{name}", RENDER.replace("{F}", file), files, expected))
        if name not in ("bio-for-sentiment",):
            run = "sde run --task masa_d1 --data {d}/" + file + " --output_dir {d}/grid --designs es_sde"
            cases.append((f"sde-run-{name}", run, files, expected))
    return cases


SCORE = "sde score --task masa_d1 --design es_sde --predictions {d}/p.jsonl"
SDE_CASES: list[Case] = [
    ("sde-render-no-input", "sde render --output {d}/o.jsonl", {}, ["sde render needs --input FILE and --output FILE"]),
    ("sde-render-bad-design", "sde render --design es_sde,format=xml --input {sde} --output {d}/o.jsonl", {}, ["format"]),
    ("sde-render-unknown-design", "sde render --design fancy --input {sde} --output {d}/o.jsonl", {}, ["fancy"]),
    ("sde-render-unknown-task", "sde render --task masa_d9 --input {sde} --output {d}/o.jsonl", {}, ["unknown task 'masa_d9'"]),
    ("sde-render-task-yaml-broken", "sde render --task {d}/t.yaml --input {sde} --output {d}/o.jsonl", {"t.yaml": "name: [x\n"}, ["t.yaml: not valid YAML"]),
    ("sde-render-bio-bad-tag", "sde render --task wnut16 --input {d}/b.bio --output {d}/o.jsonl", {"b.bio": "a X-person\n"}, ["b.bio:1: tag 'X-person' is not valid"]),
    ("sde-render-bio-no-tag", "sde render --task wnut16 --input {d}/b.bio --output {d}/o.jsonl", {"b.bio": "lonely\n"}, ["b.bio:1: expected 'token<TAB>tag'"]),
    ("sde-score-no-predictions", "sde score --task masa_d1", {}, ["sde score needs --predictions FILE"]),
    ("sde-score-missing", SCORE, {}, ["p.jsonl: file does not exist"]),
    ("sde-score-empty", SCORE, {"p.jsonl": ""}, ["p.jsonl: has no rows"]),
    ("sde-score-no-prediction", SCORE, {"p.jsonl": '{"target": "x"}\n'}, ["p.jsonl, row 1, field 'prediction': is missing"]),
    ("sde-score-null-prediction", SCORE, {"p.jsonl": '{"target": "x", "prediction": null}\n'}, ["p.jsonl, row 1, field 'prediction': must be text"]),
    ("sde-score-not-utf8", SCORE, {"p.jsonl": b'{"target": "\xff"}\n'}, ["p.jsonl, row 1: is not valid UTF-8"]),
    ("sde-score-broken", SCORE, {"p.jsonl": "{\n"}, ["p.jsonl, row 1: broken JSON"]),
    ("sde-score-bad-design", SCORE + " --design nope", {"p.jsonl": ""}, ["nope"]),
    ("sde-score-show-neg", SCORE + " --show_failed -1", {}, ["--show_failed must be >= 0"]),
    ("sde-run-no-data", "sde run --task masa_d1", {}, ["sde run needs --data FILE"]),
    ("sde-run-max-steps-0", "sde run --data {sde} --max_steps 0", {}, ["--max_steps must be > 0"]),
    ("sde-run-train-size-0", "sde run --data {sde} --train_size 0", {}, ["--train_size must be > 0"]),
    ("sde-run-lr-neg", "sde run --data {sde} --learning_rate -1", {}, ["--learning_rate must be > 0"]),
    ("sde-run-designs-empty", "sde run --data {sde} --designs ,", {}, ["--designs is empty"]),
    ("sde-run-too-few-rows", "sde run --data {sde} --train_size 50 --test_size 50 --output_dir {d}/g", {}, ["needs 100 rows; the data has"]),
]

# ---- YAML recipes -----------------------------------------------------------------------------

RECIPE = "train {d}/r.yaml --model {model} --data {qa} --prompt_key q --target_key a --output_dir {d}/w --report_to none"
YAML_CASES: list[Case] = [
    ("yaml-missing", "train {d}/ghost.yaml --data {qa}", {}, ["recipe", "ghost.yaml does not exist"]),
    ("yaml-folder", "train {d}/conf.yaml --data {qa}", {"conf.yaml/x": "1"}, ["conf.yaml is a folder"]),
    ("yaml-syntax", RECIPE, {"r.yaml": "learning_rate: [1e-3\n"}, ["r.yaml", "not valid YAML"]),
    ("yaml-tab", RECIPE, {"r.yaml": "a:\n\t- b\n"}, ["r.yaml", "line", "not valid YAML"]),
    ("yaml-not-mapping", RECIPE, {"r.yaml": "- learning_rate\n- 1e-3\n"}, ["r.yaml must be a mapping of flag: value, got list"]),
    ("yaml-not-utf8", RECIPE, {"r.yaml": b"learning_rate: \xff\n"}, ["r.yaml is not UTF-8"]),
    ("yaml-lr-text", RECIPE, {"r.yaml": "learning_rate: fast\n"}, ["r.yaml: learning_rate must be a number, got 'fast'"]),
    ("yaml-lr-list", RECIPE, {"r.yaml": "learning_rate: [1, 2]\n"}, ["r.yaml: learning_rate must be a number"]),
    ("yaml-lr-negative-text", RECIPE, {"r.yaml": "learning_rate: '-1e-3'\n"}, ["--learning_rate must be > 0"]),
    ("yaml-rank-fraction", RECIPE, {"r.yaml": "lora_rank: 2.5\n"}, ["r.yaml: lora_rank must be a whole number, got 2.5"]),
    ("yaml-rank-bool", RECIPE, {"r.yaml": "lora_rank: true\n"}, ["r.yaml: lora_rank must be a whole number, got True"]),
    ("yaml-rank-mapping", RECIPE, {"r.yaml": "lora_rank: {r: 8}\n"}, ["r.yaml: lora_rank must be a whole number"]),
    ("yaml-bool-text", RECIPE, {"r.yaml": "skip_overlength: sometimes\n"}, ["r.yaml: skip_overlength must be true or false, got 'sometimes'"]),
    ("yaml-bool-number", RECIPE, {"r.yaml": "packing: 2\n"}, ["r.yaml: packing must be true or false, got 2"]),
    ("yaml-null-model", RECIPE.replace("--model {model} ", ""), {"r.yaml": "model: null\n"}, ["r.yaml: model is empty (null)"]),
    ("yaml-template-list", RECIPE, {"r.yaml": "template: [chat]\n"}, ["r.yaml: template must be text"]),
    ("yaml-unknown-key", RECIPE, {"r.yaml": "learning_rat: 1e-3\n"}, ["r.yaml: unknown option 'learning_rat'", "learning_rate"]),
    ("yaml-extra-args-scalar", RECIPE, {"r.yaml": "extra_args: 5\n"}, ["r.yaml: extra_args must be a mapping"]),
    ("yaml-extra-args-unknown", RECIPE + " --max_steps 1", {"r.yaml": "extra_args: {warp_speed: 9}\n"}, ["extra_args: 'warp_speed' are not transformers TrainingArguments fields"]),
    ("yaml-scheduler", RECIPE, {"r.yaml": "lr_scheduler_type: sawtooth\n"}, ["--lr_scheduler_type 'sawtooth' is not valid"]),
    ("yaml-alpha-0", RECIPE, {"r.yaml": "lora_alpha: 0\n"}, ["--lora_alpha must be > 0"]),
    ("yaml-max-steps-0", RECIPE, {"r.yaml": "max_steps: 0\n"}, ["--max_steps must be >= 1"]),
    ("yaml-device", RECIPE, {"r.yaml": "device: quantum\n"}, ["--device 'quantum' is not a device"]),
    ("yaml-ppo-reference", "ppo {d}/r.yaml --model {model} --data {rl} --reward exact_match", {"r.yaml": "reference: frozen\n"}, ["r.yaml: reference 'frozen' is not valid", "base"]),
    ("yaml-ppo-reward-weights", "ppo {d}/r.yaml --model {model} --data {rl} --reward exact_match", {"r.yaml": "reward_weights: [heavy]\n"}, ["r.yaml: reward_weights must be a number, got 'heavy'"]),
    ("yaml-predict-max-new-tokens", "predict {d}/r.yaml --model {model} --data_path {prompts}", {"r.yaml": "max_new_tokens: -3\n"}, ["--max_new_tokens must be > 0"]),
    ("yaml-serve-port", "serve {d}/r.yaml --model {model}", {"r.yaml": "port: 99999\n"}, ["--port must be a TCP port"]),
]


def all_cases() -> list[Case]:
    return [*adapter_cases(), *FLAG_CASES, *file_cases(), *ROW_CASES, *sde_cases(), *SDE_CASES, *YAML_CASES]
