"""Training speed: `triage train` against the Hugging Face Trainer recipe, same run, same data.

Both fine-tune the embedded all-MiniLM-L6-v2 on the same stratified subset of the bundled
training split, with the same max length, batch size, epochs, learning rate, warm-up and
weight decay, and are scored on the same validation split. The Trainer side is the recipe a
user would write from the Hugging Face examples: pad every text to max_length, bf16 where the
CPU has it, the Trainer's own loop.

    python bench/train_speed.py [--rows 800] [--epochs 1] [--max-length 256] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402


def prepare(workdir: Path) -> Path:
    from ticket_triage.data import DataConfig, prepare_dataset
    from ticket_triage.demo import bundled_data_paths

    out = workdir / "data"
    prepare_dataset(DataConfig(input=bundled_data_paths(), out_dir=out))
    return out


def run_triage(data_dir: Path, workdir: Path, args) -> dict:
    from ticket_triage.training import TrainConfig, train_model

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lr=args.lr,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_train_rows=args.rows,
        patience=args.epochs,
        calibrate=False,
        baseline=False,
        seed=args.seed,
    )
    start = time.perf_counter()
    result = train_model(config, data_dir, workdir / "triage-run", log=lambda *_: None)
    wall = time.perf_counter() - start
    return {
        "samples_per_s": result.metrics["train_samples_per_s"],
        "val_macro_f1": max(h["val_macro_f1"] for h in result.history),
        "wall_s": wall,
    }


def run_hf_trainer(data_dir: Path, workdir: Path, args) -> dict:
    """The plain Hugging Face recipe: datasets-free here, but the same Trainer loop and padding."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from ticket_triage.data.io import load_splits
    from ticket_triage.modeling import embedded_model_path, quiet_transformers
    from ticket_triage.training.data import stratified_subset
    from ticket_triage.training.loop import _cpu_has_native_bf16

    quiet_transformers()
    splits, labels = load_splits(data_dir)
    train = stratified_subset(splits["train"], args.rows, args.seed)
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )

    class Encoded(torch.utils.data.Dataset):
        def __init__(self, texts, ys):
            self.enc = tokenizer(texts, truncation=True, padding="max_length", max_length=args.max_length)
            self.ys = ys

        def __len__(self):
            return len(self.ys)

        def __getitem__(self, i):
            item = {k: torch.tensor(v[i]) for k, v in self.enc.items()}
            item["labels"] = torch.tensor(int(self.ys[i]))
            return item

    def macro_f1(pred):
        return {"macro_f1": f1_score(pred.label_ids, pred.predictions.argmax(-1), average="macro")}

    training_args = TrainingArguments(
        output_dir=str(workdir / "hf-run"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        warmup_steps=0.1,
        weight_decay=0.01,  # a float < 1 is a ratio in transformers 5
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to=[],
        seed=args.seed,
        bf16=_cpu_has_native_bf16(),
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=Encoded(train.texts, train.labels),
        eval_dataset=Encoded(splits["val"].texts, splits["val"].labels),
        compute_metrics=macro_f1,
    )
    start = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - start
    scores = [h["eval_macro_f1"] for h in trainer.state.log_history if "eval_macro_f1" in h]
    return {"samples_per_s": output.metrics["train_samples_per_second"], "val_macro_f1": max(scores), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", type=int, default=800, help="training rows (stratified subset of the bundled train split)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data_dir = prepare(workdir)
        hf = run_hf_trainer(data_dir, workdir, args)
        ours = run_triage(data_dir, workdir, args)

    ratio = ours["samples_per_s"] / hf["samples_per_s"]
    table = Table(
        title=f"Training speed: {args.rows} rows x {args.epochs} epoch(s), max length {args.max_length}, batch {args.batch_size}"
    )
    for col in ("trainer", "train samples/s", "val macro-F1", "wall s"):
        table.add_column(col)
    for name, row in (("Hugging Face Trainer (baseline)", hf), ("triage train", ours)):
        table.add_row(name, f"{row['samples_per_s']:.2f}", f"{row['val_macro_f1']:.4f}", f"{row['wall_s']:.0f}")
    Console().print(table)
    verdict = "met" if ratio >= 1.5 and ours["val_macro_f1"] >= hf["val_macro_f1"] else "NOT met"
    print(f"speed ratio {ratio:.2f}x (target >= 1.5x at equal or better validation macro-F1): {verdict}")

    body = "\n".join(
        [
            "## Training speed (`bench/train_speed.py`)",
            "",
            f"Embedded all-MiniLM-L6-v2, {args.rows} stratified training rows of the bundled data, {args.epochs} epoch(s), max length {args.max_length}, batch {args.batch_size}, lr {args.lr}, warm-up 10%, weight decay 0.01; validation split of the bundled data.",
            "",
            "| trainer | train samples/s | val macro-F1 | wall s |",
            "|---|---:|---:|---:|",
            f"| Hugging Face Trainer, padding to max length (baseline) | {hf['samples_per_s']:.2f} | {hf['val_macro_f1']:.4f} | {hf['wall_s']:.0f} |",
            f"| `triage train` (dynamic padding, length-grouped batches, head+tail) | {ours['samples_per_s']:.2f} | {ours['val_macro_f1']:.4f} | {ours['wall_s']:.0f} |",
            "",
            f"**Speed ratio {ratio:.2f}x** (target: at least 1.5x at equal or better validation macro-F1): **{verdict}**.",
        ]
    )
    write_section("train-speed", body)


if __name__ == "__main__":
    main()
