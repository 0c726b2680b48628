"""pretune.finetune"""
