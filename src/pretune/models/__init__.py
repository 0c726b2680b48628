"""pretune.models"""
