"""pretune.study"""
