"""Side by side: cnnc's epoch lines (`cnnc train` output) and the PyTorch script's JSON, for make fashion-compare.

usage: fashion_report.py CNNC_EPOCH_LINES PYTORCH_JSON
"""
import json
import re
import sys

cnnc = [line for line in open(sys.argv[1]) if "test acc" in line]
acc = [float(re.search(r"test acc ([0-9.]+)%", line).group(1)) / 100 for line in cnnc]
rates = [float(re.search(r"([0-9.]+) img/s", line).group(1)) for line in cnnc]
rate = sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else rates[0]
torch = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print(f"{'epoch':>5}  {'cnnc':>8}  {torch['framework']:>20}")
for i, (a, b) in enumerate(zip(acc, torch["test_accuracy"])):
    print(f"{i + 1:>5}  {a:8.2%}  {b:20.2%}")
print(f"final test accuracy: cnnc {acc[-1]:.2%}, PyTorch {torch['test_accuracy'][-1]:.2%}, difference {100 * (acc[-1] - torch['test_accuracy'][-1]):+.2f} points")
print(f"training images/s (epochs after the first): cnnc {rate:,.0f}, PyTorch {torch['train_images_per_s']:,.0f}, ratio {rate / torch['train_images_per_s']:.2f}x")
