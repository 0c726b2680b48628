"""pretune.train"""
