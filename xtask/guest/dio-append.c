/*
 * dio-append: append COUNT blocks of SIZE bytes to a new file PATH, each
 * with one write(2) on a descriptor opened O_DIRECT|O_SYNC.
 *
 * Used by `cargo xtask vm crash-probe`: every write extends the file, so
 * the kernel must journal the new size before the sync that completes the
 * write returns (NOTES §1). Busybox dd cannot do this (no oflag=sync, and
 * conv=fsync syncs after the write, which hides the bug).
 *
 * Built with `gcc -static` by xtask; runs in the test VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long parse(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0) {
		fprintf(stderr, "dio-append: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	unsigned long count, size, i;
	struct stat st;
	void *buf;
	int fd;

	if (argc != 4) {
		fprintf(stderr, "usage: dio-append PATH COUNT SIZE\n");
		return 2;
	}
	count = parse(argv[2], "COUNT");
	size = parse(argv[3], "SIZE");
	if (posix_memalign(&buf, 4096, size)) {
		fprintf(stderr, "dio-append: cannot allocate %lu bytes\n", size);
		return 1;
	}
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_SYNC, 0644);
	if (fd < 0) {
		fprintf(stderr, "dio-append: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (i = 0; i < count; i++) {
		ssize_t n;

		memset(buf, 'a' + (int)(i % 26), size);
		n = write(fd, buf, size);
		if (n != (ssize_t)size) {
			fprintf(stderr, "dio-append: write %lu: %s\n", i + 1,
				n < 0 ? strerror(errno) : "short write");
			return 1;
		}
		if (fstat(fd, &st)) {
			fprintf(stderr, "dio-append: fstat: %s\n", strerror(errno));
			return 1;
		}
		printf("dio-append: write %lu of %lu bytes done, size now %lld\n",
		       i + 1, size, (long long)st.st_size);
		fflush(stdout);
	}
	return 0;
}
